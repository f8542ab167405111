// What a change checks before it touches the kernel, so that whatever can
// be found wrong is found while the previous generation is still in force
// untouched: the new generation protects something when the loaded one did
// (or --allow-empty), the state directory takes what the change writes, the
// pin directory is on bpffs when eBPF is used, and every nwf_fast table the
// change needs is ours or absent. (The generation's files were verified by
// hash when it was read.)
import type { NftFamily } from '../backends/nft/model.js';
import { CODES, NwfError } from '../util/errors.js';
import { ensureBpffs } from './bpf/bpffs.js';
import { DEFAULT_PIN_DIR } from './bpf/bpffs.js';
import { type Generation, type StateDir } from './generation.js';
import { checkTableOwnership, describeNotOurs, probeTables, type TableProbe } from './table-owner.js';
import { randomBytes } from 'node:crypto';

export interface PreflightOptions {
  netns?: string;
  pinDir?: string;
  /** Load a generation that protects no interface even when the loaded one protects some. */
  allowEmpty?: boolean;
}

export interface Preflight {
  /** This state directory's owner id. */
  owner: string;
  /** The owner id is new (drawn now): write it (StateDir.writeOwnerId) before the first table is created. */
  freshOwner: boolean;
  /** The tables named like ours, as they are now (checkTableOwnership once the needed families are known). */
  tables: TableProbe[];
  /** Things worth saying that do not stop the change. */
  notes: string[];
}

/** Refuses (LOAD_REFUSED, exit 2) a generation that protects nothing over one that protects interfaces. */
export function checkNotEmptying(next: Generation, previous: Generation | undefined, allowEmpty: boolean | undefined): void {
  if (allowEmpty || next.manifest.interfaces.length > 0 || !previous) return;
  const before = previous.manifest.interfaces.map((i) => i.iface);
  if (!before.length) return;
  const shown = before.length > 8 ? `${before.slice(0, 8).join(', ')}, ...` : before.join(', ');
  throw new NwfError(
    CODES.LOAD_REFUSED,
    `refusing to load generation ${next.manifest.id}: it protects no interface, and the loaded generation ${previous.manifest.id} protects ${before.length} (${shown}); loading it would leave every one of them unprotected`,
    {
      location: { file: next.dir },
      hint: "check its sources (compile --libvirt on a host whose /run/libvirt is still empty compiles nothing); give --allow-empty to load it on purpose, or use `nwf-fast unload` to remove nwf-fast's rules",
    },
  );
}

/** The owner id to mark tables with: the state directory's, or a new one (written by `commitOwner`). */
function ownerFor(state: StateDir): { owner: string; fresh: boolean } {
  const have = state.ownerId();
  return have ? { owner: have, fresh: false } : { owner: randomBytes(8).toString('hex'), fresh: true };
}

/**
 * Every check of a load before the kernel is touched that does not need the
 * lowered generation (see the module comment); the caller checks the tables
 * it needs with checkTableOwnership once it has lowered it. Writes nothing.
 */
export function preflightLoad(state: StateDir, g: Generation, previous: Generation | undefined, opts: PreflightOptions): Preflight {
  checkNotEmptying(g, previous, opts.allowEmpty);
  state.checkWritable(state.bytesToStore(g));
  if (g.bpf) ensureBpffs(opts.pinDir ?? DEFAULT_PIN_DIR);
  const { owner, fresh } = ownerFor(state);
  return { owner, freshOwner: fresh, tables: probeTables(opts, owner), notes: [] };
}

/** The owned-table check of a change that needs the tables of `families` (TABLE_NOT_OURS), with notes on the others. */
export function checkTables(pre: Pick<Preflight, 'owner' | 'tables'>, families: ReadonlySet<NftFamily>, stateDir: string): string[] {
  return checkTableOwnership(pre.tables, pre.owner, families, stateDir);
}

/** Checks of an unload: the state directory can record it, and which tables are ours. */
export function preflightUnload(state: StateDir, opts: PreflightOptions): Preflight {
  state.checkWritable(0);
  const owner = state.ownerId();
  // without an owner id (never loaded) no table is this state directory's
  const tables = probeTables(opts, owner ?? 'none');
  const notes = tables.filter((t) => t.state === 'foreign' || t.state === 'other-owner').map((t) => `${describeNotOurs(t, owner)}: left alone`);
  return { owner: owner ?? '', freshOwner: false, tables, notes };
}
