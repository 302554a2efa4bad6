/**
 * Nested JSON arrays (`[[1, 2], [3, 4]]`) and the flat row-major lists tensors are made of.
 */
import { InvalidInputError } from './errors';

/**
 * The shape a nested array claims, read along its first elements: `[[1, 2, 3], [4, 5, 6]]` gives `[2, 3]`,
 * a non-array gives `[]`. Says nothing about whether the rest is rectangular: {@link flattenNested} checks.
 */
export function nestedShape(value: unknown): number[] {
  const shape: number[] = [];
  let level = value;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0];
  }
  return shape;
}

/**
 * The leaves of `value` in row-major order, checking that `value` is nested exactly as `shape` says:
 * an array of `shape[0]` arrays of `shape[1]` ... and no array below the last dim.
 *
 * @param where - what the message names, e.g. `input 'x'`
 * @throws {@link InvalidInputError} naming the first element (as `data[1][0]`) that breaks the shape
 * @example
 * flattenNested([[1, 2], [3, 4]], [2, 2], "input 'x'"); // [1, 2, 3, 4]
 */
export function flattenNested(value: unknown, shape: readonly number[], where: string): unknown[] {
  const leaves: unknown[] = [];
  const visit = (node: unknown, dim: number, path: string): void => {
    if (dim === shape.length) {
      if (Array.isArray(node)) {
        throw new InvalidInputError(
          `${where}: nested data is not rectangular: ${path} is an array, expected a value`,
        );
      }
      leaves.push(node);
      return;
    }
    const expected = shape[dim] as number;
    if (!Array.isArray(node)) {
      throw new InvalidInputError(
        `${where}: nested data is not rectangular: ${path} is not an array, expected ${expected} elements`,
      );
    }
    if (node.length !== expected) {
      throw new InvalidInputError(
        `${where}: nested data is not rectangular: ${path} has ${node.length} elements, expected ${expected}`,
      );
    }
    for (let i = 0; i < node.length; i++) visit(node[i], dim + 1, `${path}[${i}]`);
  };
  visit(value, 0, 'data');
  return leaves;
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
