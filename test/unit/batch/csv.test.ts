import { parseCsvLine } from '../../../shared/core/batch/csv';
import { InvalidInputError } from '../../../shared/core/errors';

describe('parseCsvLine', () => {
  it('splits fields and unquotes RFC 4180 quoting', () => {
    expect(parseCsvLine('7,"a, b",3.5')).toEqual(['7', 'a, b', '3.5']);
    expect(parseCsvLine('"say ""hi""",,""')).toEqual(['say "hi"', '', '']);
    expect(parseCsvLine('')).toEqual(['']);
    expect(parseCsvLine('a,')).toEqual(['a', '']);
  });

  it('refuses an unterminated quote and text after a closing quote', () => {
    expect(() => parseCsvLine('1,"open')).toThrow(InvalidInputError);
    expect(() => parseCsvLine('1,"open')).toThrow(/unterminated quoted field at column 2/);
    expect(() => parseCsvLine('"a"b,c')).toThrow(/text after the closing quote of column 1/);
  });
});
