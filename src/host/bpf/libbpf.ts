// Typed binding over the system libbpf (libbpf.so.1, 1.1 or a later 1.x, on
// x86-64: ffi.ts refuses anything else) through koffi.
// One import for the whole BPF host layer:
//
//   const obj = BpfObject.open('prog.bpf.o').load();
//   const prog = obj.program('tc_main');
//   withNetns('host', () => {
//     const ifindex = ifIndex('vnet0');
//     tcHookCreate(ifindex);
//     tcAttach(prog, { ifindex, direction: 'ingress', handle: 1, priority: 1 });
//   });
//
// Every failure throws BpfError (an NwfError with code BPF_FAILED) whose
// details carry errno, its name, strerror and the libbpf log of the call
// (with the verifier log on a failed load).
export { BpfObject, type BpfObjectOpenOptions } from './object.js';
export {
  BpfProgram,
  BpfProgType,
  TC_ACT,
  XDP_ACT,
  openPinnedProgram,
  testRun,
  type ProgramLike,
  type TestRunOptions,
  type TestRunResult,
} from './program.js';
export {
  BpfMap,
  BpfMapType,
  BPF_ANY,
  BPF_EXIST,
  BPF_F_LOCK,
  BPF_NOEXIST,
  numPossibleCpus,
  openPinnedMap,
  readU64,
  u32,
  u64,
  type BpfMapInfo,
  type MapUpdateFlags,
} from './map.js';
export {
  tcAttach,
  tcDetach,
  tcHookCreate,
  tcHookDestroy,
  tcQuery,
  tcReplace,
  type TcAttachment,
  type TcDirection,
  type TcFilterSpec,
} from './tc.js';
export {
  attachTcx,
  attachXdp,
  BpfLink,
  BpfLinkType,
  BPF_F_BEFORE,
  BPF_F_REPLACE,
  BPF_TCX_EGRESS,
  BPF_TCX_INGRESS,
  BPF_XDP,
  kernelHasTcx,
  openPinnedLink,
  XDP_FLAGS,
  type BpfLinkInfo,
  type TcxAttachOptions,
  type XdpMode,
} from './link.js';
export { BPF_FS_MAGIC, BPFFS_ROOT, DEFAULT_PIN_DIR, ensureBpffs, isBpffs, unpinPath, type EnsureBpffsOptions } from './bpffs.js';
export { objGet, pinFd } from './fd.js';
export { BpfError, OsError, errnoName, strerror, type BpfErrorDetails, type OsErrorDetails } from './errors.js';
export {
  LibbpfLogLevel,
  captureLibbpfLog,
  installLibbpfPrint,
  recentLibbpfLog,
  setLibbpfLogLevel,
  setLibbpfLogSink,
  uninstallLibbpfPrint,
  type LibbpfLogSink,
} from './log.js';
export { STRUCT_SIZES, LIBBPF_SUPPORTED, checkLibbpfArch, checkLibbpfVersion, libbpfVersion, type LibbpfVersion } from './ffi.js';
export { withNetns, ifIndex, ifName, currentNetnsInode, netnsPath, CLONE_NEWNET } from './netns.js';
