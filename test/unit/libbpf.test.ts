// Unit tests of the libbpf binding that need neither root nor a BPF-capable
// kernel: struct layouts against the C headers, log capture through the
// varargs print callback, and error formatting.
import { execa } from 'execa';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import { describe, expect, it } from 'vitest';
import { BpfError, BpfObject, captureLibbpfLog, errnoName, STRUCT_SIZES } from '../../src/host/bpf/libbpf.js';
import { libbpf } from '../../src/host/bpf/ffi.js';
import { extractVerifierLog, verifierReason } from '../../src/host/bpf/log.js';
import { CODES } from '../../src/util/errors.js';

const haveLibbpf = existsSync('/usr/lib/x86_64-linux-gnu/libbpf.so.1') || existsSync('/lib/x86_64-linux-gnu/libbpf.so.1');
const haveHeaders = existsSync('/usr/include/bpf/libbpf.h');
const clang = (await execa('clang-19', ['--version'], { reject: false, timeout: 10_000 })).exitCode === 0;

// Fields whose offsets we rely on: [C struct, C field, koffi type key, koffi field].
const FIELDS: [string, string, keyof ReturnType<typeof libbpf>['types'], string][] = [
  ['bpf_object_open_opts', 'object_name', 'openOpts', 'object_name'],
  ['bpf_object_open_opts', 'relaxed_maps', 'openOpts', 'relaxed_maps'],
  ['bpf_object_open_opts', 'pin_root_path', 'openOpts', 'pin_root_path'],
  ['bpf_object_open_opts', 'kconfig', 'openOpts', 'kconfig'],
  ['bpf_object_open_opts', 'btf_custom_path', 'openOpts', 'btf_custom_path'],
  ['bpf_object_open_opts', 'kernel_log_buf', 'openOpts', 'kernel_log_buf'],
  ['bpf_object_open_opts', 'kernel_log_size', 'openOpts', 'kernel_log_size'],
  ['bpf_object_open_opts', 'kernel_log_level', 'openOpts', 'kernel_log_level'],
  ['bpf_tc_hook', 'ifindex', 'tcHook', 'ifindex'],
  ['bpf_tc_hook', 'attach_point', 'tcHook', 'attach_point'],
  ['bpf_tc_hook', 'parent', 'tcHook', 'parent'],
  ['bpf_tc_opts', 'prog_fd', 'tcOpts', 'prog_fd'],
  ['bpf_tc_opts', 'flags', 'tcOpts', 'flags'],
  ['bpf_tc_opts', 'prog_id', 'tcOpts', 'prog_id'],
  ['bpf_tc_opts', 'handle', 'tcOpts', 'handle'],
  ['bpf_tc_opts', 'priority', 'tcOpts', 'priority'],
  ['bpf_test_run_opts', 'data_in', 'testRunOpts', 'data_in'],
  ['bpf_test_run_opts', 'data_out', 'testRunOpts', 'data_out'],
  ['bpf_test_run_opts', 'data_size_in', 'testRunOpts', 'data_size_in'],
  ['bpf_test_run_opts', 'data_size_out', 'testRunOpts', 'data_size_out'],
  ['bpf_test_run_opts', 'ctx_in', 'testRunOpts', 'ctx_in'],
  ['bpf_test_run_opts', 'ctx_out', 'testRunOpts', 'ctx_out'],
  ['bpf_test_run_opts', 'ctx_size_in', 'testRunOpts', 'ctx_size_in'],
  ['bpf_test_run_opts', 'ctx_size_out', 'testRunOpts', 'ctx_size_out'],
  ['bpf_test_run_opts', 'retval', 'testRunOpts', 'retval'],
  ['bpf_test_run_opts', 'repeat', 'testRunOpts', 'repeat'],
  ['bpf_test_run_opts', 'duration', 'testRunOpts', 'duration'],
  ['bpf_test_run_opts', 'flags', 'testRunOpts', 'flags'],
  ['bpf_test_run_opts', 'cpu', 'testRunOpts', 'cpu'],
  ['bpf_test_run_opts', 'batch_size', 'testRunOpts', 'batch_size'],
  ['bpf_link_create_opts', 'flags', 'linkCreateOpts', 'flags'],
  ['bpf_link_create_opts', 'iter_info', 'linkCreateOpts', 'iter_info'],
  ['bpf_link_create_opts', 'iter_info_len', 'linkCreateOpts', 'iter_info_len'],
  ['bpf_link_create_opts', 'target_btf_id', 'linkCreateOpts', 'target_btf_id'],
  ['bpf_link_create_opts', 'perf_event', 'linkCreateOpts', '_union'],
  ['bpf_link_update_opts', 'flags', 'linkUpdateOpts', 'flags'],
  ['bpf_link_update_opts', 'old_prog_fd', 'linkUpdateOpts', 'old_prog_fd'],
];

describe.skipIf(!haveLibbpf)(`libbpf binding without privileges${haveLibbpf ? '' : ' (skipped: libbpf.so.1 is not installed)'}`, () => {
  it.skipIf(!clang || !haveHeaders)(
    `koffi struct layouts match the C headers${!clang || !haveHeaders ? ' (skipped: needs clang-19 and libbpf-dev)' : ''}`,
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'nwf-layout-'));
      try {
        const structs = Object.keys(STRUCT_SIZES);
        const src = [
          '#include <stdio.h>',
          '#include <stddef.h>',
          '#include <bpf/libbpf.h>',
          '#include <bpf/bpf.h>',
          'int main(void) {',
          ...structs.map((s) => `  printf("${s} %zu\\n", sizeof(struct ${s}));`),
          ...FIELDS.map(([s, f]) => `  printf("${s}.${f} %zu\\n", offsetof(struct ${s}, ${f}));`),
          '  return 0;',
          '}',
        ].join('\n');
        writeFileSync(join(dir, 'layout.c'), src);
        await execa('clang-19', ['-o', join(dir, 'layout'), join(dir, 'layout.c')], { timeout: 60_000 });
        const out = (await execa(join(dir, 'layout'), [], { timeout: 10_000 })).stdout;
        const c = new Map(out.split('\n').map((l) => l.split(' ') as [string, string]).map(([k, v]) => [k, Number(v)]));
        const types = libbpf().types;
        for (const s of structs) expect([s, c.get(s)]).toEqual([s, STRUCT_SIZES[s as keyof typeof STRUCT_SIZES]]);
        expect(koffi.sizeof(types.openOpts)).toBe(c.get('bpf_object_open_opts'));
        expect(koffi.sizeof(types.tcHook)).toBe(c.get('bpf_tc_hook'));
        expect(koffi.sizeof(types.tcOpts)).toBe(c.get('bpf_tc_opts'));
        expect(koffi.sizeof(types.testRunOpts)).toBe(c.get('bpf_test_run_opts'));
        expect(koffi.sizeof(types.linkCreateOpts)).toBe(c.get('bpf_link_create_opts'));
        expect(koffi.sizeof(types.linkUpdateOpts)).toBe(c.get('bpf_link_update_opts'));
        for (const [s, f, t, kf] of FIELDS) {
          expect([`${s}.${f}`, koffi.offsetof(types[t], kf)]).toEqual([`${s}.${f}`, c.get(`${s}.${f}`)]);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it('captures libbpf log lines through the varargs print callback', () => {
    const { log } = captureLibbpfLog(() => libbpf().bpf_object__open_file('/nonexistent/nwf.o', null));
    expect(log).toContain('libbpf: elf: failed to open /nonexistent/nwf.o: No such file or directory');
  });

  it('formats messages longer than the first buffer (va_list copied, not reused)', () => {
    const long = '/nonexistent/' + 'x'.repeat(5000) + '.o';
    let err: unknown;
    try {
      BpfObject.open(long);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfError);
    const e = err as BpfError;
    expect(e.code).toBe(CODES.BPF_FAILED);
    expect(e.details.errnoName).toBe('ENAMETOOLONG');
    const line = e.log.find((l) => l.includes('failed to open'));
    expect(line).toBeDefined();
    expect(line).toContain('x'.repeat(5000));
    expect(line).toMatch(/File name too long$/);
  });

  it('names errnos, including libbpf-specific codes', () => {
    expect(errnoName(13)).toBe('EACCES');
    expect(errnoName(4007)).toBe('LIBBPF_ERRNO__VERIFY');
    const e = new BpfError('bpf_map_update_elem', 'map m', 17, ['libbpf: something']);
    expect(e.message).toBe('bpf_map_update_elem (map m) failed: File exists (EEXIST, errno 17)\n  libbpf: something');
    expect(e.details).toMatchObject({ op: 'bpf_map_update_elem', object: 'map m', errno: 17, strerror: 'File exists' });
  });

  it('extracts the verifier log and its reason from libbpf output', () => {
    const log = [
      "libbpf: prog 'tc_bad': BPF program load failed: Permission denied",
      "libbpf: prog 'tc_bad': -- BEGIN PROG LOAD LOG --",
      '0: R1=ctx() R10=fp0',
      '1: (69) r1 = *(u16 *)(r1 +12)',
      'invalid access to packet, off=12 size=2, R1(id=0,off=12,r=0)',
      'R1 offset is outside of the packet',
      'processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0',
      '-- END PROG LOAD LOG --',
      "libbpf: failed to load object 'bad'",
    ];
    const v = extractVerifierLog(log)!;
    expect(v.split('\n')).toHaveLength(5);
    expect(verifierReason(v)).toBe('invalid access to packet, off=12 size=2, R1(id=0,off=12,r=0); R1 offset is outside of the packet');
    const e = new BpfError('bpf_object__load', 'object bad', 13, log);
    expect(e.verifierLog).toBe(v);
    expect(e.message).toMatch(/verifier: invalid access to packet/);
    expect(e.format()).toContain('hint: verifier: invalid access');
    expect(extractVerifierLog(['libbpf: nothing'])).toBeUndefined();
  });
});
