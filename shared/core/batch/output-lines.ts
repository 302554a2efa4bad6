/**
 * Lines of the output files. A result line is the predict endpoint's response body for the record with the
 * record's id in front (and its input, when joined):
 *
 *   {"id":"a-17","outputs":{"y":[0.5,-0.25]}}
 *   {"id":18,"input":{"x":[1,2]},"outputs":{"y":[0.5,-0.25]}}      (ONNX_SERVE_BATCH_JOIN_INPUT=true)
 *
 * so a record's outputs read exactly as `POST /predict` would answer for it. An error line names the line
 * number, the id (the line number when the record never got to its id) and the reason:
 *
 *   {"line":42,"id":42,"error":{"code":"invalid_input","message":"line 42 is not valid JSON: ..."}}
 */
import type { InferOutput } from '../protocol/infer-types';
import { encodePredictResponse } from '../protocol/predict';
import type { ParsedRecord, RecordFailure } from './records';

const utf8 = new TextEncoder();
const NEWLINE = 10;

/** The result line of one record, `\n` included. */
export function resultLine(
  record: Pick<ParsedRecord, 'id' | 'source'>,
  outputs: readonly InferOutput[],
): Uint8Array {
  const body = encodePredictResponse(outputs);
  const joined = record.source === undefined ? '' : `"input":${record.source},`;
  const head = utf8.encode(`{"id":${record.id},${joined}`);
  // body is `{"outputs":{...}}`: its opening brace is the line's own.
  const line = new Uint8Array(head.byteLength + body.byteLength);
  line.set(head, 0);
  line.set(body.subarray(1), head.byteLength);
  line[line.byteLength - 1] = NEWLINE;
  return line;
}

/** The errors-file line of one record, `\n` included. */
export function errorLine(failure: RecordFailure): Uint8Array {
  const error = JSON.stringify({ code: failure.code, message: failure.message });
  return utf8.encode(`{"line":${failure.line},"id":${failure.id},"error":${error}}\n`);
}
