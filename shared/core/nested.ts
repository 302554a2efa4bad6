/**
 * Nested JSON arrays (`[[1, 2], [3, 4]]`) and the flat row-major lists tensors are made of.
 */
import { InvalidInputError } from './errors';

/**
 * The shape a nested array claims, read along its first elements: `[[1, 2, 3], [4, 5, 6]]` gives `[2, 3]`,
 * a non-array gives `[]`. Says nothing about whether the rest is rectangular: {@link flattenNested} checks.
 *
 * The walk stops after `maxRank + 1` levels, so a body nested 100,000 deep costs nothing: a result longer
 * than `maxRank` means "deeper than allowed", and the caller refuses it before any recursive walk.
 */
export function nestedShape(value: unknown, maxRank: number): number[] {
  const shape: number[] = [];
  let level = value;
  while (Array.isArray(level) && shape.length <= maxRank) {
    shape.push(level.length);
    level = level[0];
  }
  return shape;
}

/**
 * Walks `value`, checking that it is nested exactly as `shape` says (an array of `shape[0]` arrays of
 * `shape[1]` ... and no array below the last dim), and calls `row` with each innermost array and the
 * row-major offset of its first element; a scalar (`shape` `[]`) is one row of one value. The recursion
 * is as deep as `shape` is long: callers bound the rank first (see {@link nestedShape}).
 *
 * @param where - what the message names, e.g. `input 'x'`
 * @throws {@link InvalidInputError} naming the first element (as `data[1][0]`) that breaks the shape
 */
export function forEachRow(
  value: unknown,
  shape: readonly number[],
  where: string,
  row: (values: readonly unknown[], offset: number) => void,
): void {
  if (shape.length === 0) {
    if (Array.isArray(value)) throw notRectangular(where, [], 'is an array, expected a value');
    row([value], 0);
    return;
  }
  const last = shape.length - 1;
  let offset = 0;
  // Indices of the node being visited, for messages only: building a path string per element made
  // a nested body several times slower to decode than the same data flat.
  const index: number[] = [];
  const visit = (node: unknown, dim: number): void => {
    const expected = shape[dim] as number;
    if (!Array.isArray(node)) {
      throw notRectangular(where, index, `is not an array, expected ${expected} elements`);
    }
    if (node.length !== expected) {
      throw notRectangular(where, index, `has ${node.length} elements, expected ${expected}`);
    }
    if (dim === last) {
      for (let i = 0; i < expected; i++) {
        if (Array.isArray(node[i])) {
          index.push(i);
          throw notRectangular(where, index, 'is an array, expected a value');
        }
      }
      row(node, offset);
      offset += expected;
      return;
    }
    index.push(0);
    for (let i = 0; i < expected; i++) {
      index[dim] = i;
      visit(node[i], dim + 1);
    }
    index.pop();
  };
  visit(value, 0);
}

/**
 * The leaves of `value` in row-major order, checked as {@link forEachRow} checks them.
 *
 * @param where - what the message names, e.g. `input 'x'`
 * @throws {@link InvalidInputError} naming the first element (as `data[1][0]`) that breaks the shape
 * @example
 * flattenNested([[1, 2], [3, 4]], [2, 2], "input 'x'"); // [1, 2, 3, 4]
 */
export function flattenNested(value: unknown, shape: readonly number[], where: string): unknown[] {
  const leaves: unknown[] = [];
  forEachRow(value, shape, where, (values) => {
    for (const v of values) leaves.push(v);
  });
  return leaves;
}

function notRectangular(where: string, index: readonly number[], problem: string): InvalidInputError {
  const path = `data${index.map((i) => `[${i}]`).join('')}`;
  return new InvalidInputError(`${where}: nested data is not rectangular: ${path} ${problem}`);
}

/**
 * Row-major `flat` as nested arrays of `shape`; a scalar (`shape` `[]`) is its one element.
 *
 * @example
 * nestFlat([1, 2, 3, 4, 5, 6], [2, 3]); // [[1, 2, 3], [4, 5, 6]]
 */
export function nestFlat<T>(flat: ArrayLike<T>, shape: readonly number[]): unknown {
  if (shape.length === 0) return flat[0];
  const build = (dim: number, offset: number, stride: number): unknown[] => {
    const size = shape[dim] as number;
    const inner = size === 0 ? 0 : stride / size;
    const out: unknown[] = new Array(size);
    for (let i = 0; i < size; i++) {
      out[i] = dim === shape.length - 1 ? flat[offset + i] : build(dim + 1, offset + i * inner, inner);
    }
    return out;
  };
  const total = shape.reduce((n, d) => n * d, 1);
  return build(0, 0, total);
}
