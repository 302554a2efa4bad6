import { admitRun } from '../../shared/core/deadline';
import { InferenceTimeoutError } from '../../shared/core/errors';
import { RunTimeEstimator, shapeKey } from '../../shared/core/run-time-estimator';
import type { Tensor } from '../../shared/core/tensor';

const fp32 = (...shape: number[]): Tensor => ({
  datatype: 'FP32',
  shape,
  data: new Float32Array(shape.reduce((a, b) => a * b, 1)),
});
const rows = (n: number) => ({ x: fp32(n, 10) });

describe('RunTimeEstimator', () => {
  describe('estimate', () => {
    it('has no estimate for a version it has not seen run', () => {
      const runTimes = new RunTimeEstimator();
      runTimes.observe('m', '1', rows(1), 5);
      expect(runTimes.estimate('m', '2', rows(1))).toBeUndefined();
      expect(runTimes.estimate('other', '1', rows(1))).toBeUndefined();
    });

    it('takes the longest of the recent runs of the same shapes', () => {
      const runTimes = new RunTimeEstimator({ window: 3 });
      for (const ms of [9, 4, 5, 6]) runTimes.observe('m', '1', rows(2), ms);
      // 9 left the window of three.
      expect(runTimes.estimate('m', '1', rows(2))).toEqual({ ms: 6, basis: 'observed', from: 'x[2,10]' });
    });

    it('bounds a smaller shape by the smallest seen shape with at least as many elements', () => {
      const runTimes = new RunTimeEstimator();
      runTimes.observe('m', '1', rows(64), 80);
      runTimes.observe('m', '1', rows(16), 30);
      runTimes.observe('m', '1', rows(1), 2);
      expect(runTimes.estimate('m', '1', rows(8))).toEqual({ ms: 30, basis: 'larger', from: 'x[16,10]' });
    });

    it('scales linearly from the largest smaller shape, up to the scale limit', () => {
      const runTimes = new RunTimeEstimator({ maxScale: 8 });
      runTimes.observe('m', '1', rows(1), 1);
      runTimes.observe('m', '1', rows(4), 10);
      expect(runTimes.estimate('m', '1', rows(32))).toEqual({ ms: 80, basis: 'scaled', from: 'x[4,10]' });
      // 64 rows is 16 times the largest seen: too far to guess.
      expect(runTimes.estimate('m', '1', rows(64))).toBeUndefined();
    });

    it('keys shapes by input name, whatever the order of the inputs', () => {
      const runTimes = new RunTimeEstimator();
      runTimes.observe('m', '1', { b: fp32(1, 2), a: fp32(3) }, 7);
      expect(shapeKey({ b: fp32(1, 2), a: fp32(3) })).toBe('a[3], b[1,2]');
      expect(runTimes.estimate('m', '1', { a: fp32(3), b: fp32(1, 2) })?.basis).toBe('observed');
    });

    it('forgets the oldest shapes and model versions beyond its bounds', () => {
      const runTimes = new RunTimeEstimator({ maxShapes: 2, maxModels: 2 });
      runTimes.observe('m', '1', rows(1), 1);
      runTimes.observe('m', '1', rows(2), 2);
      runTimes.observe('m', '1', rows(3), 3);
      expect(runTimes.estimate('m', '1', rows(1))?.basis).not.toBe('observed');
      runTimes.observe('n', '1', rows(1), 1);
      runTimes.observe('o', '1', rows(1), 1);
      expect(runTimes.estimate('m', '1', rows(3))).toBeUndefined();
      expect(runTimes.estimate('o', '1', rows(1))?.ms).toBe(1);
    });

    it('ignores times that are not finite non-negative numbers', () => {
      const runTimes = new RunTimeEstimator();
      runTimes.observe('m', '1', rows(1), Number.NaN);
      runTimes.observe('m', '1', rows(1), -1);
      expect(runTimes.estimate('m', '1', rows(1))).toBeUndefined();
    });
  });
});

describe('admitRun', () => {
  const run = () => "model 'm' version 1 on x[8,10]";
  const deadline = { at: 1_000, budgetMs: 1_000 };

  it('admits a run with no estimate, or one that ends before the deadline', () => {
    expect(() => admitRun(undefined, deadline, 900, run)).not.toThrow();
    expect(() => admitRun({ ms: 100, basis: 'observed', from: 'x[8,10]' }, deadline, 900, run)).not.toThrow();
  });

  it('refuses, unrun, a run whose recent time is longer than the time left, saying both', () => {
    const refuse = () => admitRun({ ms: 150.2, basis: 'observed', from: 'x[8,10]' }, deadline, 900, run);
    expect(refuse).toThrow(InferenceTimeoutError);
    expect(refuse).toThrow(
      "a run of model 'm' version 1 on x[8,10] is expected to take about 151 ms (the longest of its recent runs on x[8,10]), more than the 100 ms left before the deadline; nothing was run",
    );
  });

  it('refuses any run when no time is left, saying where the time went', () => {
    expect(() => admitRun(undefined, deadline, 1_000, run)).toThrow(
      "no time is left before the deadline for a run of model 'm' version 1 on x[8,10] (the 1000 ms the request had went to reading it and loading the model); nothing was run",
    );
    expect(() => admitRun(undefined, { at: 990, budgetMs: -10 }, 1_000, run)).toThrow(
      /\(the request arrived with no time left\); nothing was run$/,
    );
  });

  it('refuses on a larger shape’s time even beyond the whole budget, but not on a scaled guess beyond it', () => {
    const late = { at: 1_000, budgetMs: 100 };
    expect(() => admitRun({ ms: 150, basis: 'larger', from: 'x[16,10]' }, late, 950, run)).toThrow(
      /the longest recent run on the larger x\[16,10\]/,
    );
    expect(() => admitRun({ ms: 150, basis: 'scaled', from: 'x[4,10]' }, late, 950, run)).not.toThrow();
    // Within the whole budget a scaled guess refuses: an invocation with more time left can run it.
    expect(() => admitRun({ ms: 90, basis: 'scaled', from: 'x[4,10]' }, late, 950, run)).toThrow(
      /scaled by element count from recent runs on x\[4,10\]/,
    );
  });
});
