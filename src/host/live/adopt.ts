// `nwf-fast adopt DOMAIN...`: moves a domain's interface <filterref>s into
// nwf-fast's metadata (native mode), or back with --revert, as an edit of
// the domain XML text that keeps every other line as it is (so the unified
// diff shows exactly the change). The filterref keeps its syntax in the
// nwf namespace, keyed by the interface's MAC:
//
//   <interface type='bridge'>              <metadata>
//     <mac address='52:54:00:00:00:01'/>      <nwf:filters xmlns:nwf='urn:x-nwf-fast:metadata:1'>
//     ...                          <->          <nwf:interface mac='52:54:00:00:00:01'>
//     <filterref filter='clean-traffic'>          <nwf:filterref filter='clean-traffic'>
//       <parameter name='IP' value='..'/>           <nwf:parameter name='IP' value='..'/>
//     </filterref>                                </nwf:filterref>
//   </interface>                                </nwf:interface>
//                                             </nwf:filters>
//                                           </metadata>
import { CODES, NwfError } from '../../util/errors.js';
import { parseMac } from '../../ir/values.js';
import { NWF_METADATA_NS, NWF_METADATA_PREFIX, parseLiveDomain } from '../../xml/live-domain.js';
import type { FilterRefNode } from '../../xml/ast.js';

const XML_ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '"': '&quot;' };
const esc = (s: string): string => s.replace(/[&<>'"]/g, (c) => XML_ESC[c] as string);

/** A filterref element in `prefix` ('' or 'nwf:'), indented. */
export function filterRefText(ref: Pick<FilterRefNode, 'filter' | 'params'>, indent: string, prefix = ''): string[] {
  const params = [...ref.params].flatMap(([k, vs]) => vs.map((v) => `${indent}  <${prefix}parameter name='${esc(k)}' value='${esc(v)}'/>`));
  if (!params.length) return [`${indent}<${prefix}filterref filter='${esc(ref.filter)}'/>`];
  return [`${indent}<${prefix}filterref filter='${esc(ref.filter)}'>`, ...params, `${indent}</${prefix}filterref>`];
}

interface Block {
  /** Line range [start, end] (inclusive) of an element. */
  start: number;
  end: number;
}

const indentOf = (line: string): string => /^\s*/.exec(line)?.[0] ?? '';

/** `lines` with `count` lines at `start` replaced by `items` (a new array: no spread of a document's lines into a call). */
function replaceLines(lines: readonly string[], start: number, count: number, items: readonly string[]): string[] {
  return lines.slice(0, start).concat(items, lines.slice(start + count));
}

/** The element starting at line i (`<name ...>` ... `</name>`, or `<name .../>`), by lines. */
function elementAt(lines: readonly string[], i: number, name: string): Block {
  const first = lines[i] as string;
  if (new RegExp(`<${name}\\b[^>]*/>`).test(first)) return { start: i, end: i };
  for (let j = i; j < lines.length; j++) if ((lines[j] as string).includes(`</${name}>`)) return { start: i, end: j };
  throw new NwfError(CODES.XML_MALFORMED, `no </${name}> after line ${i + 1}`);
}

/** Interfaces of the domain text: their line range, MAC and filterref line range. */
function interfaceBlocks(lines: readonly string[]): { block: Block; mac?: string; filterref?: Block }[] {
  const out: { block: Block; mac?: string; filterref?: Block }[] = [];
  let inDevices = false;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] as string;
    if (/<devices>/.test(l)) inDevices = true;
    if (/<\/devices>/.test(l)) inDevices = false;
    if (!inDevices || !/^\s*<interface\b/.test(l)) continue;
    const block = elementAt(lines, i, 'interface');
    const rec: { block: Block; mac?: string; filterref?: Block } = { block };
    for (let j = block.start + 1; j < block.end; j++) {
      const m = /<mac\s+address=['"]([^'"]+)['"]/.exec(lines[j] as string);
      if (m) rec.mac = parseMac(m[1] as string) ?? (m[1] as string);
      if (/^\s*<filterref\b/.test(lines[j] as string)) rec.filterref = elementAt(lines, j, 'filterref');
    }
    out.push(rec);
    i = block.end;
  }
  return out;
}

/** The interfaces of the text, checked against the parsed domain (one element start per line, as libvirt writes them). */
function matchedBlocks(lines: readonly string[], d: { name: string; interfaces: readonly { mac?: string }[] }): ReturnType<typeof interfaceBlocks> {
  const blocks = interfaceBlocks(lines);
  if (blocks.length !== d.interfaces.length || blocks.some((b, i) => b.mac !== d.interfaces[i]?.mac)) {
    throw new NwfError(CODES.XML_MALFORMED, `domain ${d.name}: cannot edit this XML text: its <interface> elements are not one start tag per line as libvirt writes them`, {
      hint: 'use the XML of `virsh dumpxml --inactive DOMAIN`',
    });
  }
  return blocks;
}

/** The <metadata> element of the domain (not one nested elsewhere), if any. */
function metadataBlock(lines: readonly string[]): Block | undefined {
  const i = lines.findIndex((l) => /^\s*<metadata\s*\/?>/.test(l));
  return i < 0 ? undefined : elementAt(lines, i, 'metadata');
}

export interface AdoptEdit {
  name: string;
  /** The edited XML (equal to the input when there is nothing to move). */
  xml: string;
  /** MACs of the interfaces whose filterref moved. */
  moved: string[];
  notes: string[];
}

/** Moves every interface <filterref> into nwf-fast metadata. */
export function adoptXml(xml: string, file: string): AdoptEdit {
  const d = parseLiveDomain(xml, file);
  const lines = xml.split('\n');
  const notes: string[] = [];
  const moved: { mac: string; ref: FilterRefNode; block: Block }[] = [];
  const blocks = matchedBlocks(lines, d);
  const hasMeta = new Set(d.interfaces.filter((i) => i.metadata && i.mac).map((i) => i.mac as string));
  for (const [n, b] of blocks.entries()) {
    const itf = d.interfaces[n];
    if (!b.filterref || !itf?.filterref) continue;
    if (!b.mac) {
      notes.push(`interface ${n + 1} has a filterref but no <mac address>: left under libvirt (give it a MAC first)`);
      continue;
    }
    moved.push({ mac: b.mac, ref: itf.filterref, block: b.filterref });
    if (hasMeta.has(b.mac)) notes.push(`interface ${b.mac} already has nwf-fast metadata (it wins): its libvirt filterref is removed`);
  }
  if (!moved.length) return { name: d.name, xml, moved: [], notes: [...notes, 'no interface <filterref> to move'] };
  // removals from the bottom up keep earlier line numbers valid
  let out = [...lines];
  for (const m of [...moved].sort((a, b) => b.block.start - a.block.start)) out = replaceLines(out, m.block.start, m.block.end - m.block.start + 1, []);
  const fresh = moved.filter((m) => !hasMeta.has(m.mac));
  if (fresh.length) {
    const meta = metadataBlock(out);
    const existingFilters = meta ? out.slice(meta.start, meta.end + 1).findIndex((l) => new RegExp(`<([A-Za-z_][\\w.-]*:)?filters\\b[^>]*${NWF_METADATA_NS.replace(/[.:]/g, '\\$&')}`).test(l)) : -1;
    if (meta && existingFilters >= 0) {
      // add entries into the existing nwf:filters, before its end tag
      const fStart = meta.start + existingFilters;
      const fEnd = elementAt(out, fStart, `${/<([A-Za-z_][\w.-]*:)?filters/.exec(out[fStart] as string)?.[1] ?? ''}filters`).end;
      const prefix = /<([A-Za-z_][\w.-]*):filters/.exec(out[fStart] as string)?.[1] ?? NWF_METADATA_PREFIX;
      const ind = indentOf(out[fStart] as string) + '  ';
      out = replaceLines(out, fEnd, 0, fresh.flatMap((m) => entryText(m.mac, m.ref, ind, `${prefix}:`)));
    } else {
      const base = meta ? indentOf(out[meta.start] as string) : indentOf(out.find((l) => /<name>/.test(l)) ?? '  ');
      const filters = [`${base}  <${NWF_METADATA_PREFIX}:filters xmlns:${NWF_METADATA_PREFIX}='${NWF_METADATA_NS}'>`]
        .concat(fresh.flatMap((m) => entryText(m.mac, m.ref, `${base}    `, `${NWF_METADATA_PREFIX}:`)))
        .concat([`${base}  </${NWF_METADATA_PREFIX}:filters>`]);
      const wrapped = [`${base}<metadata>`].concat(filters, [`${base}</metadata>`]);
      if (meta && /<metadata\s*\/>/.test(out[meta.start] as string)) out = replaceLines(out, meta.start, 1, wrapped);
      else if (meta) out = replaceLines(out, meta.end, 0, filters);
      else {
        // libvirt's order: name, uuid, genid, title, description, metadata
        let after = -1;
        for (const tag of ['name', 'uuid', 'genid', 'title', 'description']) {
          const i = out.findIndex((l) => new RegExp(`^\\s*<${tag}\\b`).test(l));
          if (i >= 0) after = elementAt(out, i, tag).end;
        }
        out = replaceLines(out, after + 1, 0, wrapped);
      }
    }
  }
  return { name: d.name, xml: out.join('\n'), moved: moved.map((m) => m.mac), notes };
}

function entryText(mac: string, ref: FilterRefNode, indent: string, prefix: string): string[] {
  return [`${indent}<${prefix}interface mac='${esc(mac)}'>`, ...filterRefText(ref, `${indent}  `, prefix), `${indent}</${prefix}interface>`];
}

/** Moves nwf-fast's metadata filterrefs back into the interfaces (libvirt's nwfilter). */
export function revertXml(xml: string, file: string): AdoptEdit {
  const d = parseLiveDomain(xml, file);
  const lines = xml.split('\n');
  const notes: string[] = [];
  const blocks = matchedBlocks(lines, d);
  const inserts: { at: number; text: string[] }[] = [];
  const moved: string[] = [];
  for (const [n, b] of blocks.entries()) {
    const itf = d.interfaces[n];
    if (!itf?.metadata || !b.mac) continue;
    if (b.filterref) {
      notes.push(`interface ${b.mac} has a libvirt filterref already: kept, nwf-fast's entry dropped`);
      moved.push(b.mac);
      continue;
    }
    // libvirt puts filterref after model/driver and before alias/address
    let at = b.block.end;
    for (let j = b.block.start + 1; j < b.block.end; j++) {
      if (/^\s*<(alias|address|rom|acpi)\b/.test(lines[j] as string)) {
        at = j;
        break;
      }
    }
    inserts.push({ at, text: filterRefText(itf.metadata, indentOf(lines[b.block.start] as string) + '  ') });
    moved.push(b.mac);
  }
  for (const mac of d.unmatchedMetadata) notes.push(`nwf-fast metadata for MAC ${mac} matches no interface: dropped`);
  const meta = metadataBlock(lines);
  if (!meta || (!moved.length && !d.unmatchedMetadata.length)) return { name: d.name, xml, moved: [], notes: [...notes, 'no nwf-fast metadata to move'] };
  let out = [...lines];
  // nwf:filters out of <metadata> (and <metadata> out when nothing else is in it); bottom-up edits
  const rel = out.slice(meta.start, meta.end + 1).findIndex((l) => /<([A-Za-z_][\w.-]*:)?filters\b/.test(l) && l.includes(NWF_METADATA_NS));
  const edits: { start: number; count: number; text: string[] }[] = inserts.map((x) => ({ start: x.at, count: 0, text: x.text }));
  if (rel >= 0) {
    const fStart = meta.start + rel;
    const prefix = /<([A-Za-z_][\w.-]*:)?filters/.exec(out[fStart] as string)?.[1] ?? '';
    const f = elementAt(out, fStart, `${prefix}filters`);
    const onlyOurs = meta.start + 1 === f.start && meta.end - 1 === f.end;
    edits.push(onlyOurs ? { start: meta.start, count: meta.end - meta.start + 1, text: [] } : { start: f.start, count: f.end - f.start + 1, text: [] });
  }
  for (const e of edits.sort((a, b) => b.start - a.start)) out = replaceLines(out, e.start, e.count, e.text);
  return { name: d.name, xml: out.join('\n'), moved, notes };
}

/** The element `virsh metadata --set` takes for the live domain (children in no namespace; libvirt adds nwf's to the top element). */
export function metadataForVirsh(xml: string, file: string): string | undefined {
  const d = parseLiveDomain(xml, file);
  const entries = d.interfaces.filter((i) => i.metadata && i.mac);
  if (!entries.length) return undefined;
  return `<filters>${entries.map((i) => `<interface mac='${esc(i.mac as string)}'>${filterRefText(i.metadata as FilterRefNode, '').map((l) => l.trim()).join('')}</interface>`).join('')}</filters>`;
}
