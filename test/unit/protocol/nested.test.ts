import { InvalidInputError } from '../../../shared/core/errors';
import { flattenNested, nestedShape, nestFlat } from '../../../shared/core/nested';

describe('nestedShape', () => {
  it.each([
    [5, []],
    [[], [0]],
    [[1, 2, 3], [3]],
    [
      [
        [1, 2, 3],
        [4, 5, 6],
      ],
      [2, 3],
    ],
    [
      [[], []],
      [2, 0],
    ],
    [
      [[[1]], [[2]]],
      [2, 1, 1],
    ],
  ])('%j has shape %j', (value, shape) => {
    expect(nestedShape(value, 8)).toEqual(shape);
  });
});

describe('nestedShape bounds', () => {
  it('stops one level past the rank it is given, however deep the value is nested', () => {
    const deep = JSON.parse(`${'['.repeat(100_000)}1${']'.repeat(100_000)}`);
    expect(nestedShape(deep, 2)).toEqual([1, 1, 1]);
    expect(nestedShape([[1, 2]], 2)).toEqual([1, 2]);
  });
});

describe('flattenNested', () => {
  it('returns the leaves in row-major order', () => {
    const value = [
      [
        [1, 2],
        [3, 4],
      ],
      [
        [5, 6],
        [7, 8],
      ],
    ];
    expect(flattenNested(value, [2, 2, 2], "input 'x'")).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('takes a scalar for shape []', () => {
    expect(flattenNested(7, [], "input 'x'")).toEqual([7]);
  });

  it.each([
    [
      'a short row',
      [
        [1, 2, 3],
        [4, 5],
      ],
      [2, 3],
      /data\[1\] has 2 elements, expected 3/,
    ],
    [
      'a long row',
      [
        [1, 2],
        [3, 4, 5],
      ],
      [2, 2],
      /data\[1\] has 3 elements, expected 2/,
    ],
    ['a value where a row belongs', [[1, 2], 3], [2, 2], /data\[1\] is not an array, expected 2 elements/],
    [
      'a row where a value belongs',
      [
        [1, [2]],
        [3, 4],
      ],
      [2, 2],
      /data\[0\]\[1\] is an array, expected a value/,
    ],
    ['too few rows', [[1, 2]], [2, 2], /data has 1 elements, expected 2/],
  ])('refuses %s, naming the element', (_label, value, shape, message) => {
    const run = () => flattenNested(value, shape, "input 'x'");
    expect(run).toThrow(InvalidInputError);
    expect(run).toThrow(/^input 'x': nested data is not rectangular: /);
    expect(run).toThrow(message);
  });
});

describe('nestFlat', () => {
  it.each([
    [
      [1, 2, 3, 4, 5, 6],
      [2, 3],
      [
        [1, 2, 3],
        [4, 5, 6],
      ],
    ],
    [
      [1, 2, 3, 4, 5, 6],
      [3, 2],
      [
        [1, 2],
        [3, 4],
        [5, 6],
      ],
    ],
    [
      [1, 2, 3, 4],
      [2, 1, 2],
      [[[1, 2]], [[3, 4]]],
    ],
    [[9], [], 9],
    [[], [2, 0], [[], []]],
    [[], [0, 3], []],
  ])('nests %j as %j', (flat, shape, nested) => {
    expect(nestFlat(flat, shape)).toEqual(nested);
  });

  it('undoes flattenNested', () => {
    const flat = Array.from({ length: 24 }, (_, i) => i);
    const shape = [2, 3, 4];
    expect(flattenNested(nestFlat(flat, shape), shape, "input 'x'")).toEqual(flat);
  });
});
