// onnxruntime-node checks `data instanceof Float32Array` against the constructors of the realm it was
// loaded in (the outer one), while jest runs tests in a separate vm realm with its own constructors.
// Handing the test realm the outer realm's ArrayBuffer and typed-array constructors makes both agree.
const { TestEnvironment } = require('jest-environment-node');

const SHARED_CONSTRUCTORS = [
  'ArrayBuffer',
  'SharedArrayBuffer',
  'DataView',
  'Int8Array',
  'Uint8Array',
  'Uint8ClampedArray',
  'Int16Array',
  'Uint16Array',
  'Int32Array',
  'Uint32Array',
  'Float32Array',
  'Float64Array',
  'BigInt64Array',
  'BigUint64Array',
];

class NodeRealmEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED_CONSTRUCTORS) {
      this.global[name] = globalThis[name];
    }
  }
}

module.exports = NodeRealmEnvironment;
