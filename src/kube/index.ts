export { KubeApiError, KubeClient, type KubeObject, type PatchType, type WatchEvent } from './client.js';
export { inClusterConnection, loadKubeconfig, type KubeConnection } from './connection.js';
export { MODEL_LABEL_PREFIX, MODEL_LABEL_READY, modelLabelKey, modelRefHash, nodeFieldManager } from './labels.js';
export { GROUP, KIND, MODELCACHES_PATH, VERSION, selectsNode, totals, type ModelCache, type ModelCacheSpec, type NodeEntry } from './modelcache.js';
export { startKubeSync, type KubeSettings, type KubeSync, type KubeSyncOptions, type KubeSyncTuning } from './sync.js';
