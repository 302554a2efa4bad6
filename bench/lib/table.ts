/** Plain-text tables for the terminal and Markdown tables for BENCHMARKS.md, from the same rows. */
import type { Summary } from './stats';

/** One table: a title, column headers and rows of already formatted cells. */
export interface Table {
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: readonly (readonly string[])[];
  /** Lines printed under the table (targets, caveats). */
  readonly notes?: readonly string[];
}

/**
 * A summary as `median (min–max)`, rounded to `digits` decimals.
 *
 * @example
 * formatSummary({ n: 3, median: 10.26, p99: 12, min: 9.8, max: 12 }, 1); // '10.3 (9.8–12.0)'
 */
export function formatSummary(summary: Summary | undefined, digits = 0): string {
  if (summary === undefined) return '–';
  return `${summary.median.toFixed(digits)} (${summary.min.toFixed(digits)}–${summary.max.toFixed(digits)})`;
}

/** A number rounded to `digits` decimals, or `–` when there is none. */
export function formatNumber(value: number | undefined, digits = 0): string {
  return value === undefined || !Number.isFinite(value) ? '–' : value.toFixed(digits);
}

/** Renders `table` with aligned columns: text cells left, cells that start with a digit right. */
export function renderTable(table: Table): string {
  const widths = table.columns.map((column, i) =>
    Math.max(column.length, ...table.rows.map((row) => (row[i] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => {
        const width = widths[i] ?? 0;
        return /^[-\d.]/.test(cell) && i > 0 ? cell.padStart(width) : cell.padEnd(width);
      })
      .join('  ')
      .trimEnd();
  const out = [table.title, line(table.columns), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const row of table.rows) out.push(line(row));
  for (const note of table.notes ?? []) out.push(note);
  return out.join('\n');
}

/** Renders `table` as a Markdown table (for BENCHMARKS.md). */
export function renderMarkdown(table: Table): string {
  const cellText = (cell: string) => cell.replace(/\|/g, '\\|');
  const out = [
    `### ${table.title}`,
    '',
    `| ${table.columns.map(cellText).join(' | ')} |`,
    `| ${table.columns.map(() => '---').join(' | ')} |`,
  ];
  for (const row of table.rows) out.push(`| ${row.map(cellText).join(' | ')} |`);
  if (table.notes !== undefined && table.notes.length > 0) out.push('', ...table.notes.map((n) => `- ${n}`));
  return out.join('\n');
}
