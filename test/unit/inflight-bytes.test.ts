import { OverloadedError } from '../../shared/core/errors';
import { InflightBytes } from '../../shared/core/inflight-bytes';

describe('InflightBytes', () => {
  it('takes bytes up to the limit, refuses past it with 503 + Retry-After holding nothing, and takes again once released', () => {
    const inflight = new InflightBytes(1000, 2);
    inflight.take(600);
    inflight.take(400);
    expect(inflight.held).toBe(1000);
    const refusal = (() => {
      try {
        inflight.take(1);
      } catch (error) {
        return error;
      }
      return undefined;
    })();
    expect(refusal).toBeInstanceOf(OverloadedError);
    expect((refusal as OverloadedError).status).toBe(503);
    expect((refusal as OverloadedError).headers).toEqual({ 'retry-after': '2' });
    expect((refusal as OverloadedError).message).toMatch(/limit of 0\.0 MiB; retry later/);
    expect(inflight.held).toBe(1000);
    inflight.release(600);
    inflight.take(500);
    expect(inflight.held).toBe(900);
  });

  it('refuses a limit that is not a positive integer', () => {
    expect(() => new InflightBytes(0)).toThrow(RangeError);
    expect(() => new InflightBytes(1.5)).toThrow(RangeError);
  });
});
