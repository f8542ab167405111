// What a map and a program of the binding have in common: either an object's
// member (a libbpf pointer whose fd the object owns and closes) or a
// standalone fd this wrapper owns (a pinned object opened by path); its fd,
// label, pin, unpin and close.
import { checkInt } from './call.js';
import { BpfError, EBADF } from './errors.js';
import { closeFd, pinFd } from './fd.js';
import { unpinPath } from './bpffs.js';

/** Liveness of the object that owns a map or program (closing it closes their fds). */
export interface OwnerState {
  readonly label: string;
  closed: boolean;
}

/** The libbpf calls of one kind of object member: `bpf_map__*` or `bpf_program__*`. */
export interface MemberCalls {
  /** "map" or "program", in labels and the names of the libbpf calls. */
  readonly kind: 'map' | 'program';
  /** The libbpf function prefix, `bpf_map__` or `bpf_program__`. */
  readonly prefix: string;
  fd(ptr: bigint): number;
  pin(ptr: bigint, path: string): number;
  unpin(ptr: bigint, path: string): number;
}

export type HandleSource = { ptr: bigint; owner: OwnerState } | { fd: number };

export abstract class BpfHandle {
  readonly name: string;
  readonly #calls: MemberCalls;
  readonly #ptr: bigint | null;
  readonly #owner: OwnerState | null;
  #fd: number;

  protected constructor(name: string, src: HandleSource, calls: MemberCalls) {
    this.name = name;
    this.#calls = calls;
    if ('ptr' in src) {
      this.#ptr = src.ptr;
      this.#owner = src.owner;
      this.#fd = -1;
    } else {
      this.#ptr = null;
      this.#owner = null;
      this.#fd = src.fd;
    }
  }

  /** @internal the libbpf `struct bpf_map *` / `struct bpf_program *` of an object member. */
  get ptr(): bigint | null {
    return this.#ptr;
  }

  /** Whether the object that owns this member was closed. */
  protected get ownerClosed(): boolean {
    return this.#owner?.closed ?? false;
  }

  get label(): string {
    const { kind } = this.#calls;
    return this.#owner ? `${kind} ${this.name} of ${this.#owner.label}` : `${kind} ${this.name}`;
  }

  /** The fd (owned by its BpfObject or by this wrapper; do not close it). */
  get fd(): number {
    const { kind, prefix } = this.#calls;
    const ptr = this.#ptr;
    if (ptr !== null) {
      if (this.#owner?.closed) throw new BpfError(`${prefix}fd`, this.label, EBADF, [], { hint: 'the BpfObject was closed' });
      // Fixed once loaded (and closed with the object): cache it for the hot paths.
      if (this.#fd < 0) this.#fd = checkInt(`${prefix}fd`, this.label, () => this.#calls.fd(ptr));
      return this.#fd;
    }
    if (this.#fd < 0) throw new BpfError(`${kind} fd`, this.label, EBADF, [], { hint: `the ${kind} was closed` });
    return this.#fd;
  }

  /** Pin at `path` in a bpf filesystem (see ensureBpffs). */
  pin(path: string): void {
    const ptr = this.#ptr;
    if (ptr === null) return pinFd(this.fd, path, this.label);
    this.fd; // throws if the object is closed
    checkInt(`${this.#calls.prefix}pin`, `${this.label} -> ${path}`, () => this.#calls.pin(ptr, path));
  }

  /** Remove the pin at `path` (the object lives on while fds or programs use it). */
  unpin(path: string): void {
    const ptr = this.#ptr;
    if (ptr === null) return unpinPath(path);
    this.fd;
    checkInt(`${this.#calls.prefix}unpin`, `${this.label} <- ${path}`, () => this.#calls.unpin(ptr, path));
  }

  /** Close a standalone fd. Members of a BpfObject close with the object; this is a no-op for them. */
  close(): void {
    if (this.#ptr === null && this.#fd >= 0) {
      closeFd(this.#fd);
      this.#fd = -1;
    }
  }
}
