import { ROW_GROUP_TARGET_BYTES, rowGroupSizeFor } from '../../shared/adapters/parquet-output-writer';

describe('rowGroupSizeFor', () => {
  it('keeps a part within the row cap in one group, and splits a larger one evenly', () => {
    expect(rowGroupSizeFor(100_000, 122_880, 48)).toBe(100_000);
    expect(rowGroupSizeFor(122_880, 122_880, 48)).toBe(122_880);
    // Two of 65,000, not 122,880 and a runt of 7,120.
    expect(rowGroupSizeFor(130_000, 122_880, 48)).toBe(65_000);
    expect(rowGroupSizeFor(1_000_000, 122_880, 48)).toBe(111_112);
    expect(rowGroupSizeFor(3, 2, 48)).toBe(2);
  });

  it('gives wide rows fewer rows a group: about 128 MiB a group at most', () => {
    // 1,000 float32 values a row (4,008 bytes with the id and the list): 33,487 rows fit in 128 MiB.
    const perRow = 4 + 1000 * 4 + 4;
    const cap = Math.floor(ROW_GROUP_TARGET_BYTES / perRow);
    expect(cap).toBe(33_487);
    // 100,000 rows: three groups of 33,334 (each just under 128 MiB), not one of 400 MB.
    expect(rowGroupSizeFor(100_000, 122_880, perRow)).toBe(33_334);
    // A row over the target still gets a group of its own.
    expect(rowGroupSizeFor(5, 122_880, ROW_GROUP_TARGET_BYTES * 2)).toBe(1);
  });
});
