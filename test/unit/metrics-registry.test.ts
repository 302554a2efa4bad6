import { MetricsRegistry, PROMETHEUS_CONTENT_TYPE } from '../../shared/core/metrics/registry';

describe('MetricsRegistry', () => {
  describe('render', () => {
    it('writes HELP, TYPE and one line per labelled series of a counter and a gauge', () => {
      const registry = new MetricsRegistry();
      const requests = registry.counter('app_requests_total', 'Requests answered.', ['model', 'outcome']);
      const depth = registry.gauge('app_queue_depth', 'Requests waiting.', ['model']);
      requests.inc({ model: 'linear', outcome: 'success' });
      requests.inc({ model: 'linear', outcome: 'success' }, 2);
      requests.inc({ outcome: 'overloaded', model: 'linear' });
      depth.set({ model: 'linear' }, 7);
      depth.set({ model: 'linear' }, 3);
      expect(registry.render()).toBe(
        [
          '# HELP app_requests_total Requests answered.',
          '# TYPE app_requests_total counter',
          'app_requests_total{model="linear",outcome="success"} 3',
          'app_requests_total{model="linear",outcome="overloaded"} 1',
          '# HELP app_queue_depth Requests waiting.',
          '# TYPE app_queue_depth gauge',
          'app_queue_depth{model="linear"} 3',
          '',
        ].join('\n'),
      );
    });

    it('writes cumulative histogram buckets with +Inf, the sum and the count', () => {
      const registry = new MetricsRegistry();
      const sizes = registry.histogram('app_batch_size', 'Rows per run.', ['model'], [4, 1, 2]);
      for (const rows of [1, 1, 3, 2, 9]) sizes.observe({ model: 'm' }, rows);
      expect(registry.render().split('\n')).toEqual([
        '# HELP app_batch_size Rows per run.',
        '# TYPE app_batch_size histogram',
        'app_batch_size_bucket{model="m",le="1"} 2',
        'app_batch_size_bucket{model="m",le="2"} 3',
        'app_batch_size_bucket{model="m",le="4"} 4',
        'app_batch_size_bucket{model="m",le="+Inf"} 5',
        'app_batch_size_sum{model="m"} 16',
        'app_batch_size_count{model="m"} 5',
        '',
      ]);
      expect(sizes.get({ model: 'm' })).toEqual({ count: 5, sum: 16 });
    });

    it('escapes label values and help text', () => {
      const registry = new MetricsRegistry();
      registry.counter('app_total', 'A \\ back\nslash.', ['name']).inc({ name: 'say "hi"\\\n' });
      expect(registry.render()).toContain('# HELP app_total A \\\\ back\\nslash.');
      expect(registry.render()).toContain('app_total{name="say \\"hi\\"\\\\\\n"} 1');
    });

    it('writes metrics without labels bare, and nothing at all for an empty registry', () => {
      const registry = new MetricsRegistry();
      expect(registry.render()).toBe('');
      registry.gauge('app_up', 'Up.').set({}, 1);
      expect(registry.render()).toContain('\napp_up 1\n');
      expect(PROMETHEUS_CONTENT_TYPE).toMatch(/^text\/plain; version=0\.0\.4/);
    });
  });

  describe('misuse', () => {
    it('refuses invalid names, reserved labels and a name registered twice', () => {
      const registry = new MetricsRegistry();
      expect(() => registry.counter('bad-name', 'x')).toThrow(/not a valid metric name/);
      expect(() => registry.histogram('h', 'x', ['le'], [1])).toThrow(/not a valid label name/);
      expect(() => registry.histogram('h2', 'x', [], [])).toThrow(/buckets/);
      registry.counter('c_total', 'x');
      expect(() => registry.gauge('c_total', 'x')).toThrow(/registered already/);
    });

    it('refuses a missing or unknown label and a counter going down', () => {
      const counter = new MetricsRegistry().counter('c_total', 'x', ['model']);
      expect(() => counter.inc({})).toThrow(/needs the label 'model'/);
      expect(() => counter.inc({ model: 'm', extra: 'y' })).toThrow(/takes the labels model only/);
      expect(() => counter.inc({ model: 'm' }, -1)).toThrow(/cannot go down/);
    });
  });
});
