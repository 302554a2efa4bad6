'use strict';
/**
 * A local Serverless Framework plugin with two jobs:
 *
 * 1. Before packaging, build the onnxruntime-node layer folder (layers/onnxruntime/build.cjs) for the
 *    stack's `provider.architecture` at the path `layers.onnxruntime.path` names, so the layer always
 *    matches the architecture being deployed.
 * 2. When `custom.deploy.compareDeployedLayer` is false, skip the framework's comparison of the layer with
 *    the deployed stack's. That comparison calls CloudFormation DescribeStacks to reuse an uploaded layer
 *    and cannot run without credentials and network; `npm run package` turns it off, and a deploy that
 *    packages for itself keeps it. Without it a deploy uploads the layer again (a new layer version).
 */
const { relative, resolve } = require('node:path');
const { buildLayer, NODE_ARCH } = require('../layers/onnxruntime/build.cjs');

const LAYER = 'onnxruntime';

class OnnxruntimeLayerPlugin {
  constructor(serverless, _options, { log } = {}) {
    this.serverless = serverless;
    this.log = log;
    this.hooks = {
      'before:package:createDeploymentArtifacts': () => this.buildLayer(),
      'before:package:compileLayers': () => this.configureLayerComparison(),
    };
  }

  async buildLayer() {
    const service = this.serverless.service;
    const layer = service.layers?.[LAYER];
    if (layer === undefined || typeof layer.path !== 'string') {
      throw new Error(`serverless.yml: layers.${LAYER}.path is missing`);
    }
    const arch = service.provider.architecture ?? 'x86_64';
    const serviceDir = this.serverless.serviceDir;
    const layerDir = resolve(serviceDir, layer.path);
    // The layer folder is named after the architecture so that a stale build for the other one is never
    // zipped by mistake.
    if (!layerDir.endsWith(`/${arch}`)) {
      throw new Error(`layers.${LAYER}.path '${layer.path}' must end with the architecture '${arch}'`);
    }
    if (NODE_ARCH[arch] === undefined) throw new Error(`provider.architecture '${arch}' is not supported`);
    const built = await buildLayer({ arch, outDir: resolve(layerDir, '..') });
    const mb = (built.bytes / 1024 / 1024).toFixed(1);
    this.log?.info?.(
      `onnxruntime-node ${built.onnxruntimeVersion} layer for ${arch}: ${mb} MB in ${relative(serviceDir, built.dir)}`,
    );
  }

  configureLayerComparison() {
    const setting = this.serverless.service.custom?.deploy?.compareDeployedLayer;
    if (setting === undefined || setting === true || setting === 'true') return;
    const compiler = this.serverless.pluginManager.plugins.find(
      (plugin) => plugin.constructor?.name === 'AwsCompileLayers',
    );
    if (compiler === undefined || typeof compiler.compareWithLastLayer !== 'function') {
      throw new Error('this framework version has no AwsCompileLayers.compareWithLastLayer to skip');
    }
    compiler.compareWithLastLayer = async () => {};
    this.log?.info?.('Layer comparison with the deployed stack skipped (compareDeployedLayer: false)');
  }
}

module.exports = OnnxruntimeLayerPlugin;
