/**
 * CSV fields of one line (RFC 4180 quoting: `"a, b"`, `"say ""hi"""`). A record is one line: a quoted
 * field cannot hold a line break, since lines are split before fields (and shards start at line starts).
 */
import { InvalidInputError } from '../errors';

/**
 * The fields of `line`, unquoted.
 *
 * @throws {@link InvalidInputError} for an unterminated quote or text after a closing quote
 * @example
 * parseCsvLine('7,"a, b",3.5'); // ['7', 'a, b', '3.5']
 */
export function parseCsvLine(line: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    if (line.charCodeAt(i) === 34 /* " */) {
      let value = '';
      let at = i + 1;
      for (;;) {
        const quote = line.indexOf('"', at);
        if (quote === -1)
          throw new InvalidInputError(`unterminated quoted field at column ${fields.length + 1}`);
        value += line.slice(at, quote);
        if (line.charCodeAt(quote + 1) === 34) {
          value += '"';
          at = quote + 2;
          continue;
        }
        i = quote + 1;
        break;
      }
      fields.push(value);
      if (i === line.length) return fields;
      if (line.charCodeAt(i) !== 44 /* , */) {
        throw new InvalidInputError(`text after the closing quote of column ${fields.length}`);
      }
      i += 1;
    } else {
      const comma = line.indexOf(',', i);
      if (comma === -1) {
        fields.push(line.slice(i));
        return fields;
      }
      fields.push(line.slice(i, comma));
      i = comma + 1;
    }
  }
}
