export { startFakeHub } from './server.js';
export { DEMO_REPO, demoFiles, safetensors, writeDemo } from './demo.js';
export { spawnFakeHub, type FakeHubProcess } from './process.js';
export type {
  AddedFile,
  AddedRepo,
  FakeHub,
  FakeRepoFile,
  FakeRepoSpec,
  FaultKind,
  FaultSpec,
  FileSet,
  RequestLogEntry,
  StartOptions,
} from './types.js';
