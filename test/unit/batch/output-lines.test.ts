import { errorLine, resultLine } from '../../../shared/core/batch/output-lines';
import { encodePredictResponse } from '../../../shared/core/protocol/predict';

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const outputs = [
  { name: 'y', datatype: 'FP32' as const, shape: [2], data: Float32Array.from([0.5, Number.NaN]) },
  { name: 'n', datatype: 'INT64' as const, shape: [], data: BigInt64Array.from([9007199254740993n]) },
];

describe('resultLine', () => {
  it("is the predict endpoint's body for the record, with the id in front", () => {
    const line = text(resultLine({ id: '"a-1"' }, outputs));
    expect(line).toBe('{"id":"a-1","outputs":{"y":[0.5,"NaN"],"n":9007199254740993}}\n');
    expect(line.slice(line.indexOf('"outputs"'), -2)).toBe(text(encodePredictResponse(outputs)).slice(1, -1));
  });

  it('joins the input record when asked', () => {
    expect(text(resultLine({ id: '3', source: '{"x":[1]}' }, outputs.slice(0, 1)))).toBe(
      '{"id":3,"input":{"x":[1]},"outputs":{"y":[0.5,"NaN"]}}\n',
    );
  });
});

describe('errorLine', () => {
  it('names the line, the id and the reason', () => {
    const line = errorLine({ line: 12, id: '"r"', code: 'invalid_input', message: 'bad "x"' });
    expect(JSON.parse(text(line))).toEqual({
      line: 12,
      id: 'r',
      error: { code: 'invalid_input', message: 'bad "x"' },
    });
    expect(text(line).endsWith('}\n')).toBe(true);
  });
});
