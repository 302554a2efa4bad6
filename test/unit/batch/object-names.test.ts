import {
  decodeS3EventKey,
  normalizeEtag,
  outputNames,
  parseInputKey,
} from '../../../shared/core/batch/object-names';

describe('parseInputKey', () => {
  it('reads the model, the version, the format and the output stem from the key', () => {
    expect(parseInputKey('batch/in/linear@2/2024/day 1.csv.gz', 'batch/in')).toEqual({
      ok: true,
      input: {
        model: 'linear',
        version: '2',
        path: '2024/day 1.csv.gz',
        format: 'csv',
        gzipSuffix: true,
        name: '2024/day 1',
      },
    });
    expect(parseInputKey('in/text-direction/a.b.jsonl', 'in')).toMatchObject({
      ok: true,
      input: { model: 'text-direction', version: undefined, format: 'jsonl', gzipSuffix: false, name: 'a.b' },
    });
  });

  it('tells Parquet by its extension', () => {
    expect(parseInputKey('batch/in/linear/day.parquet', 'batch/in')).toMatchObject({
      ok: true,
      input: { format: 'parquet', name: 'day' },
    });
  });

  it('reads unknown extensions as JSON Lines and keeps them in the name', () => {
    expect(parseInputKey('in/m/records.txt', 'in')).toMatchObject({
      ok: true,
      input: { format: 'jsonl', name: 'records.txt' },
    });
    expect(parseInputKey('in/m/.jsonl', 'in')).toMatchObject({ ok: true, input: { name: '.jsonl' } });
  });

  it('takes every key of the bucket with an empty prefix', () => {
    expect(parseInputKey('linear/x.jsonl', '')).toMatchObject({ ok: true, input: { model: 'linear' } });
  });

  it.each([
    ['batch/out/linear/x.out.jsonl', /outside the input prefix/],
    ['batch/input/linear/x.jsonl', /outside the input prefix/],
    ['batch/in/x.jsonl', /no '<model>\[@<version>\]\/' folder/],
    ['batch/in/linear/', /folder marker/],
    ['batch/in/lin ear/x.jsonl', /not a valid model name/],
    ['batch/in/linear@latest/x.jsonl', /not a valid version/],
  ])('is no job for %s', (key, reason) => {
    const result = parseInputKey(key, 'batch/in');
    expect(result.ok).toBe(false);
    expect((result as { reason: string }).reason).toMatch(reason);
  });
});

describe('outputNames', () => {
  it('places results, errors, manifest and work under the output prefix and the model', () => {
    expect(outputNames('batch/out', 'linear', '2024/day 1', '"abc-2"', true)).toEqual({
      base: 'batch/out/linear/2024/day 1',
      out: 'batch/out/linear/2024/day 1.out.jsonl.gz',
      errors: 'batch/out/linear/2024/day 1.errors.jsonl',
      manifest: 'batch/out/linear/2024/day 1.manifest.json',
      work: 'batch/out/linear/2024/day 1.parts/abc-2',
    });
    expect(outputNames('', 'm', 'x', 'e/../f', false).work).toBe('m/x.parts/e____f');
  });

  it('strips the quotes of an ETag', () => {
    expect(normalizeEtag('"d41d8cd98f00b204e9800998ecf8427e"')).toBe('d41d8cd98f00b204e9800998ecf8427e');
  });
});

describe('decodeS3EventKey', () => {
  it('decodes keys as AWS encodes them in event records', () => {
    expect(decodeS3EventKey('batch/in/linear/day+1%2B2+%C3%A9t%C3%A9.jsonl')).toBe(
      'batch/in/linear/day 1+2 été.jsonl',
    );
    expect(decodeS3EventKey('a%2Fb')).toBe('a/b');
  });
});
