import {
  IntegrityError,
  ModelLoadBackoffError,
  ModelLoadError,
  ModelNotFoundError,
} from '../../shared/core/errors';
import { ModelCache } from '../../shared/core/model-cache';
import type { LoadedModel } from '../../shared/core/ports';
import { DOUBLER_SIGNATURE, deferred, FakeModel, RecordingTelemetry } from '../support/fakes';

const key = (model: string, version = '1') => ({ model, version, sha256: `sha-${model}-${version}` });

function loaderOf(created: FakeModel[], gate?: Promise<void>) {
  return async (): Promise<LoadedModel> => {
    await gate;
    const model = new FakeModel(DOUBLER_SIGNATURE, new Uint8Array(1));
    created.push(model);
    return model;
  };
}

describe('ModelCache', () => {
  describe('acquire', () => {
    it('shares one load between 20 concurrent callers', async () => {
      const cache = new ModelCache({ maxBytes: 1000 });
      const created: FakeModel[] = [];
      const gate = deferred();
      let loads = 0;
      const load = loaderOf(created, gate.promise);
      const leases = Array.from({ length: 20 }, () =>
        cache.acquire(key('a'), 10, () => {
          loads += 1;
          return load();
        }),
      );
      gate.resolve();
      const got = await Promise.all(leases);
      expect(loads).toBe(1);
      expect(new Set(got.map((l) => l.model)).size).toBe(1);
      for (const lease of got) lease.release();
    });

    it('does not cache a failed load: the first caller after its backoff loads again', async () => {
      let now = 0;
      const cache = new ModelCache({ maxBytes: 1000, clock: () => now });
      let calls = 0;
      const failing = async (): Promise<LoadedModel> => {
        calls += 1;
        throw new ModelLoadError('boom');
      };
      await expect(cache.acquire(key('a'), 10, failing)).rejects.toThrow('boom');
      now += 1000;
      await expect(cache.acquire(key('a'), 10, failing)).rejects.toThrow('boom');
      expect(calls).toBe(2);
      now += 2000;
      const lease = await cache.acquire(key('a'), 10, loaderOf([]));
      expect(cache.isLoaded(key('a'))).toBe(true);
      lease.release();
    });
  });

  describe('failed loads', () => {
    const failing =
      (calls: { n: number }, message = 'sha256 does not match') =>
      async (): Promise<LoadedModel> => {
        calls.n += 1;
        throw new IntegrityError(message);
      };

    it('answers within the backoff with the last reason and Retry-After, without loading', async () => {
      let now = 0;
      const cache = new ModelCache({ maxBytes: 1000, clock: () => now });
      const calls = { n: 0 };
      await expect(cache.acquire(key('a'), 10, failing(calls))).rejects.toThrow(IntegrityError);

      now = 400;
      const error = await cache.acquire(key('a'), 10, failing(calls)).catch((e: unknown) => e);

      expect(error).toBeInstanceOf(ModelLoadBackoffError);
      expect(error).toMatchObject({
        status: 503,
        code: 'integrity_check_failed',
        message: 'sha256 does not match (not tried again for 1 s)',
        headers: { 'retry-after': '1' },
      });
      expect((error as Error).cause).toBeInstanceOf(IntegrityError);
      expect(calls.n).toBe(1);
    });

    it('doubles the backoff with each failure in a row, up to the maximum', async () => {
      let now = 0;
      const cache = new ModelCache({
        maxBytes: 1000,
        clock: () => now,
        loadBackoff: { initialMs: 1000, maxMs: 5000 },
      });
      const calls = { n: 0 };
      const waits: string[] = [];
      for (let i = 0; i < 5; i++) {
        await expect(cache.acquire(key('a'), 10, failing(calls))).rejects.toThrow(IntegrityError);
        const error = (await cache.acquire(key('a'), 10, failing(calls)).catch((e: unknown) => e)) as {
          headers: Record<string, string>;
        };
        waits.push(error.headers['retry-after'] ?? '');
        now += Number(waits.at(-1)) * 1000;
      }
      expect(waits).toEqual(['1', '2', '4', '5', '5']);
      expect(calls.n).toBe(5);
    });

    it('remembers failures per artifact: another sha256 of the same version loads at once', async () => {
      const cache = new ModelCache({ maxBytes: 1000, clock: () => 0 });
      await expect(cache.acquire(key('a'), 10, failing({ n: 0 }))).rejects.toThrow(IntegrityError);
      const lease = await cache.acquire({ ...key('a'), sha256: 'fixed' }, 10, loaderOf([]));
      lease.release();
    });

    it('does not remember a missing file: asking again costs no download, and it may be uploaded', async () => {
      const cache = new ModelCache({ maxBytes: 1000, clock: () => 0 });
      const missing = async (): Promise<LoadedModel> => {
        throw new ModelNotFoundError("model 'a' has no version '1'");
      };
      await expect(cache.acquire(key('a'), 10, missing)).rejects.toThrow(ModelNotFoundError);
      (await cache.acquire(key('a'), 10, loaderOf([]))).release();
    });

    it('forgets the failures once a load succeeds', async () => {
      let now = 0;
      const cache = new ModelCache({ maxBytes: 1, clock: () => now });
      const calls = { n: 0 };
      await expect(cache.acquire(key('a'), 10, failing(calls))).rejects.toThrow(IntegrityError);
      now = 1000;
      (await cache.acquire(key('a'), 10, loaderOf([]))).release();
      (await cache.acquire(key('b'), 10, loaderOf([]))).release(); // evicts 'a' (budget 1 byte)
      expect(cache.isLoaded(key('a'))).toBe(false);
      await expect(cache.acquire(key('a'), 10, failing(calls))).rejects.toThrow(IntegrityError);
      const error = (await cache.acquire(key('a'), 10, failing(calls)).catch((e: unknown) => e)) as {
        headers: Record<string, string>;
      };
      expect(error.headers['retry-after']).toBe('1');
    });

    it('reports hits and misses', async () => {
      const telemetry = new RecordingTelemetry();
      const cache = new ModelCache({ maxBytes: 1000, telemetry });
      (await cache.acquire(key('a'), 10, loaderOf([]))).release();
      (await cache.acquire(key('a'), 10, loaderOf([]))).release();
      expect(telemetry.ofType('cache').map((e) => e.hit)).toEqual([false, true]);
    });
  });

  describe('eviction', () => {
    it('evicts and releases the least recently used session over the byte budget', async () => {
      const cache = new ModelCache({ maxBytes: 25 });
      const created: FakeModel[] = [];
      (await cache.acquire(key('a'), 10, loaderOf(created))).release();
      (await cache.acquire(key('b'), 10, loaderOf(created))).release();
      (await cache.acquire(key('a'), 10, loaderOf(created))).release(); // a is now the most recent
      (await cache.acquire(key('c'), 10, loaderOf(created))).release();
      expect(cache.loadedKeys().map((k) => k.model)).toEqual(['a', 'c']);
      expect(created.map((m) => m.released)).toEqual([false, true, false]);
      expect(cache.loadedBytes).toBe(20);
    });

    it('never releases a session while a lease holds it, and evicts it once returned', async () => {
      const cache = new ModelCache({ maxBytes: 15 });
      const created: FakeModel[] = [];
      const held = await cache.acquire(key('a'), 10, loaderOf(created));
      (await cache.acquire(key('b'), 10, loaderOf(created))).release();
      // Over budget, but 'a' is leased and 'b' is the most recent: both stay for now.
      expect(created.map((m) => m.released)).toEqual([false, false]);
      const again = await cache.acquire(key('c'), 10, loaderOf(created));
      // 'b' is idle and older than 'c': it goes; 'a' is still leased.
      expect(created.map((m) => m.released)).toEqual([false, true, false]);
      held.release();
      await Promise.resolve();
      expect(created[0]?.released).toBe(true);
      expect(cache.loadedKeys().map((k) => k.model)).toEqual(['c']);
      again.release();
    });

    it('keeps one model larger than the whole budget instead of reloading it per request', async () => {
      const cache = new ModelCache({ maxBytes: 5 });
      const created: FakeModel[] = [];
      (await cache.acquire(key('big'), 50, loaderOf(created))).release();
      (await cache.acquire(key('big'), 50, loaderOf(created))).release();
      expect(created).toHaveLength(1);
      expect(created[0]?.released).toBe(false);
      (await cache.acquire(key('other'), 1, loaderOf(created))).release();
      expect(created.map((m) => m.released)).toEqual([true, false]);
    });

    it('drops a discarded session at once and releases it when its last lease returns', async () => {
      const telemetry = new RecordingTelemetry();
      const cache = new ModelCache({ maxBytes: 100, telemetry });
      const created: FakeModel[] = [];
      const broken = await cache.acquire(key('a'), 10, loaderOf(created));
      const other = await cache.acquire(key('a'), 10, loaderOf(created));
      broken.discard();
      expect(cache.isLoaded(key('a'))).toBe(false);
      expect(cache.loadedBytes).toBe(0);
      broken.release();
      expect(created[0]?.released).toBe(false); // still leased by `other`
      other.release();
      await Promise.resolve();
      expect(created[0]?.released).toBe(true);
      const fresh = await cache.acquire(key('a'), 10, loaderOf(created));
      expect(fresh.model).toBe(created[1]);
      expect(telemetry.ofType('model-evicted')).toHaveLength(1);
      fresh.release();
    });

    it('releases idle sessions on clear', async () => {
      const cache = new ModelCache({ maxBytes: 100 });
      const created: FakeModel[] = [];
      (await cache.acquire(key('a'), 10, loaderOf(created))).release();
      await cache.clear();
      expect(created[0]?.released).toBe(true);
      expect(cache.loadedBytes).toBe(0);
    });
  });
});
