// Which tables named like nwf-fast's are nwf-fast's. Every table nwf-fast
// creates carries a comment `nwf-fast owner=ID`, ID being its state
// directory's owner id (StateDir.ownerId). nwf-fast changes and deletes
// only tables with its own mark: a table named nwf_fast without it is
// someone else's (refused by name when a load needs that table, left alone
// otherwise), and one with another owner id belongs to another state
// directory.
//
// nft 1.0.6 neither reads nor prints a table comment in JSON, and the text
// listing of a table prints all of it, so the comments are read with one
// NFT_MSG_GETTABLE per table over netlink (NFTA_TABLE_USERDATA, libnftnl's
// TLV format) and written with nft's text syntax when a table is created.
import type { NftFamily } from '../backends/nft/model.js';
import { CODES, NwfError } from '../util/errors.js';
import { nftApplyText, type NftRunOptions } from './nft.js';
import { withNetns } from './netns.js';
import { OUR_TABLES, type TableId } from './inventory.js';
import { NfnlSocket } from './nfnl/socket.js';
import { NlWriter, type NlReply } from './nfnl/netlink.js';
import { errnoText } from './nfnl/socket.js';
import { NFGENMSG_LEN, NFPROTO, NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE, NFTA_TABLE_NAME, NFTA_TABLE_USERDATA, NFTNL_UDATA_TABLE_COMMENT, NLA_HDRLEN, NLM_F_REQUEST, NLMSG_ERROR, nftMsgType, type NfFamily } from './nfnl/uapi.js';

export const OWNER_MARK_PREFIX = 'nwf-fast owner=';

/** The comment nwf-fast gives its tables. */
export const ownerMark = (owner: string): string => `${OWNER_MARK_PREFIX}${owner}`;

/** The owner id in a table comment, or undefined when the comment is not nwf-fast's mark. */
export function ownerOfComment(comment: string | undefined): string | undefined {
  if (!comment?.startsWith(OWNER_MARK_PREFIX)) return undefined;
  const id = comment.slice(OWNER_MARK_PREFIX.length);
  return /^[0-9a-f]{16}$/.test(id) ? id : undefined;
}

/**
 * absent; ours (our mark, our owner id); other-owner (nwf-fast's mark with
 * another owner id); foreign (no nwf-fast mark).
 */
export type TableState = 'absent' | 'ours' | 'other-owner' | 'foreign';

export interface TableProbe {
  family: NftFamily;
  name: string;
  state: TableState;
  comment?: string;
  /** The owner id of nwf-fast's mark. */
  owner?: string;
}

/** nftables cannot be read here: not root (CAP_NET_ADMIN). */
export class KernelAccessError extends NwfError {
  constructor(detail: string) {
    super(CODES.KERNEL_UNSUPPORTED, `cannot read the kernel's nftables tables: ${detail}`, { hint: 'run nwf-fast as root (it needs CAP_NET_ADMIN to read and change nftables)' });
    this.name = 'KernelAccessError';
  }
}

const align4 = (n: number): number => (n + 3) & ~3;

/** The comment in a table's NFTA_TABLE_USERDATA. */
export function commentOfUserdata(ud: Buffer): string | undefined {
  for (let i = 0; i + 2 <= ud.length; ) {
    const type = ud.readUInt8(i);
    const len = ud.readUInt8(i + 1);
    if (i + 2 + len > ud.length) return undefined;
    if (type === NFTNL_UDATA_TABLE_COMMENT) return ud.subarray(i + 2, i + 2 + len).toString('utf8').replace(/\0+$/, '');
    i += 2 + len;
  }
  return undefined;
}

/** The user data attribute of an NFT_MSG_NEWTABLE message body (nfgenmsg, then attributes). */
export function userdataOfTable(body: Buffer): Buffer | undefined {
  for (let at = NFGENMSG_LEN; at + NLA_HDRLEN <= body.length; ) {
    const len = body.readUInt16LE(at);
    const type = body.readUInt16LE(at + 2) & 0x3fff;
    if (len < NLA_HDRLEN || at + len > body.length) return undefined;
    if (type === NFTA_TABLE_USERDATA) return body.subarray(at + NLA_HDRLEN, at + len);
    at += align4(len);
  }
  return undefined;
}

const EPERM = 1;
const ENOENT = 2;
const EAFNOSUPPORT = 97;

/** One GETTABLE per table (sent together), the comments of those that exist. */
function queryTables(sock: NfnlSocket, tables: readonly TableId[]): Map<string, { exists: boolean; comment?: string }> {
  const w = new NlWriter(256);
  const first = sock.reserveSeq(tables.length);
  tables.forEach((t, i) => {
    w.begin(nftMsgType(NFT_MSG_GETTABLE), NLM_F_REQUEST, first + i, NFPROTO[t.family as NfFamily]);
    w.strz(NFTA_TABLE_NAME, t.name);
    w.end();
  });
  sock.send(w.bytes());
  const mine = (r: NlReply): boolean => ((r.seq - first) >>> 0) < tables.length;
  const replies = sock.receive((rs) => new Set(rs.filter(mine).map((r) => r.seq)).size >= tables.length, 2000).filter(mine);
  const out = new Map<string, { exists: boolean; comment?: string }>();
  tables.forEach((t, i) => {
    const r = replies.find((x) => x.seq === ((first + i) >>> 0));
    const what = `${t.family} ${t.name}`;
    if (!r) throw new NwfError(CODES.COMMAND_FAILED, `nf_tables did not answer the query for table ${what}`);
    if (r.type === NLMSG_ERROR) {
      if (r.errno === ENOENT || r.errno === EAFNOSUPPORT) return void out.set(what, { exists: false });
      if (r.errno === EPERM) throw new KernelAccessError(`${errnoText(EPERM)}`);
      throw new NwfError(CODES.COMMAND_FAILED, `reading table ${what} failed: ${errnoText(r.errno ?? 0)}`);
    }
    if (r.type !== nftMsgType(NFT_MSG_NEWTABLE) || !r.body) throw new NwfError(CODES.COMMAND_FAILED, `unexpected reply (type ${r.type}) to the query for table ${what}`);
    const ud = userdataOfTable(r.body);
    const comment = ud ? commentOfUserdata(ud) : undefined;
    out.set(what, { exists: true, ...(comment !== undefined ? { comment } : {}) });
  });
  return out;
}

export interface ProbeOptions {
  netns?: string;
}

/** The tables named like nwf-fast's, each with its state for `owner` (any nwf-fast mark counts as ours when owner is undefined). */
export function probeTables(opts: ProbeOptions, owner: string | undefined): TableProbe[] {
  const run = (): Map<string, { exists: boolean; comment?: string }> => {
    let sock: NfnlSocket;
    try {
      sock = NfnlSocket.open();
    } catch (e) {
      throw new NwfError(CODES.COMMAND_FAILED, `cannot open a netlink socket to read nftables: ${(e as Error).message}`, { cause: e });
    }
    try {
      return queryTables(sock, OUR_TABLES);
    } finally {
      sock.close();
    }
  };
  const found = opts.netns !== undefined ? withNetns(opts.netns, run) : run();
  return OUR_TABLES.map((t): TableProbe => {
    const f = found.get(`${t.family} ${t.name}`) ?? { exists: false };
    if (!f.exists) return { family: t.family, name: t.name, state: 'absent' };
    const mark = ownerOfComment(f.comment);
    const state: TableState = mark === undefined ? 'foreign' : owner === undefined || mark === owner ? 'ours' : 'other-owner';
    return { family: t.family, name: t.name, state, ...(f.comment !== undefined ? { comment: f.comment } : {}), ...(mark ? { owner: mark } : {}) };
  });
}

/** One sentence on a table that is not ours. */
export function describeNotOurs(t: TableProbe, owner: string | undefined): string {
  if (t.state === 'other-owner') return `table ${t.family} ${t.name} belongs to another nwf-fast state directory (owner ${t.owner}${owner ? `; this one is ${owner}` : ''})`;
  return `table ${t.family} ${t.name} is not nwf-fast's (it has no nwf-fast owner mark${t.comment ? `; its comment is "${t.comment}"` : ''})`;
}

/**
 * Refuses (TABLE_NOT_OURS) when a table the change needs (`families`) is
 * not ours; returns notes on the others that are not ours (left alone).
 */
export function checkTableOwnership(tables: readonly TableProbe[], owner: string, families: ReadonlySet<NftFamily>, stateDir: string): string[] {
  const notes: string[] = [];
  for (const t of tables) {
    if (t.state === 'absent' || t.state === 'ours') continue;
    if (!families.has(t.family)) {
      notes.push(`${describeNotOurs(t, owner)}: left alone`);
      continue;
    }
    const hint =
      t.state === 'other-owner'
        ? `use that state directory (--state-dir, NWF_FAST_STATE_DIR); if it is lost, adopt its tables with: printf '${t.owner}\\n' > ${stateDir}/owner (or remove them with nwf-fast unload --force)`
        : `nwf-fast never changes a table it did not create: rename or remove that table (nft list table ${t.family} ${t.name} shows it); a table left by an nwf-fast older than 0.2, which did not mark its tables, can be removed with: nft delete table ${t.family} ${t.name}`;
    throw new NwfError(CODES.TABLE_NOT_OURS, `${describeNotOurs(t, owner)}, and this generation needs that table: refusing to touch it`, { hint });
  }
  return notes;
}

/** Creates the tables of `families` that are absent, each with our mark (one nft transaction). */
export async function createMarkedTables(tables: readonly TableProbe[], families: ReadonlySet<NftFamily>, owner: string, opts: NftRunOptions): Promise<NftFamily[]> {
  const create = tables.filter((t) => t.state === 'absent' && families.has(t.family));
  if (!create.length) return [];
  await nftApplyText(create.map((t) => `add table ${t.family} ${t.name} { comment "${ownerMark(owner)}"; }`).join('\n') + '\n', opts);
  return create.map((t) => t.family);
}
