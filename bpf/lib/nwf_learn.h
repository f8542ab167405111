/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * IP learning (docs/design/ip-learning.md 2.2, 3), for shapes whose policy
 * learns $IP: the generated nwf_policy.h sets NWF_LEARN_ANY or NWF_LEARN_DHCP.
 * The learned-state maps are pinned by name under nwf-fast's pin directory
 * and shared by every learning shape's object, so reloading programs keeps
 * them; user space seeds an entry before the tap is enabled, reads entries
 * back and deletes a departed tap's entry. A load never deletes them.
 *
 * CTRL_IP_LEARNING=any (nwf_lrn_any: tap ifindex -> the learned address).
 * Before the lock, libvirt's learning table: from the VM the right MAC with
 * IPv4 or ARP passes, everything else drops; to the VM everything passes.
 * The first IPv4 frame from the VM with a source outside 0.0.0.0 and
 * 224.0.0.0/3 locks the port: bpf_map_update_elem(BPF_NOEXIST) under the
 * hash map's bucket lock, so exactly one writer wins; a frame that lost
 * (-EEXIST) reads the winner. Either way the frame then takes the policy,
 * whose learned $IP tests compare with the winner. A full map learns
 * nothing and drops (fail closed).
 *
 * CTRL_IP_LEARNING=dhcp (nwf_lrn_dhcp: tap ifindex -> NWF_LRN_SLOTS leases).
 * User space creates the entry (zeroed, or with seeded leases) when it sets
 * the port up and never updates it afterwards (an update would replace the
 * element under a program writing into the old one). A tap re-created
 * since (a new ifindex, no entry) gets one with free slots from the program
 * (BPF_NOEXIST: one writer wins): it learns from scratch, as at creation.
 * A lease is live while its slot's word holds NWF_LRN_VALID | address and
 * bpf_ktime_get_boot_ns() < its deadline (~0: infinite). The port is locked
 * while it has a live lease; its $IP is the set of live leases.
 *  - No live lease: libvirt's DHCP-only table. From the VM: the VM's MAC,
 *    IPv4 UDP 68 -> 67 passes, everything else drops (ARP included). To the
 *    VM: destination the VM's MAC or broadcast, IPv4 UDP 67 -> 68 from a
 *    server of DHCPSERVER (any server when it is not given) passes,
 *    everything else drops.
 *  - A DHCPACK (op 2, option 53 = 5, option 51 > 0, chaddr = the VM's MAC,
 *    yiaddr not 0.0.0.0 nor in 224.0.0.0/3) to the VM, from a DHCPSERVER server (checked at every ACK,
 *    also after the lock) and accepted by the policy or the DHCP-only
 *    table, adds or renews the lease yiaddr until now + option 51: the slot
 *    holding the address is renewed (its deadline only moves forward),
 *    else a free or expired slot is claimed with a 64-bit compare-and-swap
 *    (two CPUs never claim one slot). With every slot live, nothing is
 *    learned.
 *  - A DHCPRELEASE (op 1, 53 = 7) from the VM, accepted by the policy, ends
 *    the lease named by ciaddr.
 * The options are walked with bpf_loop (at most NWF_DHCP_MAX_OPTS, PAD
 * included), every read a bounds-checked load at a variable offset: 53 and
 * 51 may sit anywhere, after PAD or long options. A message without END
 * within the frame, with a second 53 or 51, or with more options than the
 * bound teaches nothing.
 */
#ifndef NWF_LEARN_H
#define NWF_LEARN_H

#include "nwf_common.h"
#include "nwf_load.h"

#ifndef NWF_LEARN_ANY
#define NWF_LEARN_ANY 0
#endif
#ifndef NWF_LEARN_DHCP
#define NWF_LEARN_DHCP 0
#endif

#define NWF_LRN_MAX 65536
#define NWF_LRN_POLICY (-1) /* go on with the policy (the port is locked) */

/*
 * An address a port may learn (a source under `any`, a DHCPACK's yiaddr
 * under `dhcp`): not 0.0.0.0, not multicast or class E (224.0.0.0/3, which
 * includes 255.255.255.255). `a` points at its 4 bytes in network order (a
 * memory image). The nft backend refuses the same (backends/nft/learn.ts).
 */
static __always_inline bool nwf_lrn_addr_ok(const void *a)
{
	const __u8 *b = (const __u8 *)a;

	return (b[0] | b[1] | b[2] | b[3]) != 0 && (b[0] & 0xe0) != 0xe0;
}

#if NWF_LEARN_ANY
/* The learned address of an `any` port. */
struct nwf_lrn_any_val {
	__u64 addr;	  /* memory image of the IPv4 address (4 bytes, zero-extended) */
	__u64 learned_ns; /* bpf_ktime_get_boot_ns() when learned; 0: seeded by user space */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NWF_LRN_MAX);
	__type(key, __u32);
	__type(value, struct nwf_lrn_any_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nwf_lrn_any SEC(".maps");

/* libvirt learns from IPv4 sources other than 0.0.0.0 and 224.0.0.0/3. */
static __always_inline bool nwf_lrn_teaches(const struct nwf_pkt *p)
{
	return (p->has & NWF_HAS_IP4) && nwf_lrn_addr_ok(&p->ip4_src);
}

/*
 * Before the policy: the learned address into p (the policy's learned tests
 * read p->lrn_ip), or the learning table's verdict while the port learns.
 */
static __always_inline int nwf_learn(struct nwf_pkt *p, const struct nwf_config *c, const int dir, __u32 ifindex)
{
	struct nwf_lrn_any_val *w = bpf_map_lookup_elem(&nwf_lrn_any, &ifindex);

	if (!w) {
		if (dir == NWF_DIR_IN)
			return NWF_STAT_ACCEPT; /* learning: everything to the VM passes */
		if (p->src != c->lrn_mac)
			return NWF_DROP_MAC_SPOOF;
		if (p->proto == NWF_ETH_P_ARP)
			return NWF_STAT_ACCEPT;
		if (p->proto != NWF_ETH_P_IPV4)
			return NWF_DROP_OTHER_L2;
		if (!nwf_lrn_teaches(p))
			return NWF_STAT_ACCEPT;
		{
			struct nwf_lrn_any_val v = { .addr = p->ip4_src, .learned_ns = bpf_ktime_get_boot_ns() };

			bpf_map_update_elem(&nwf_lrn_any, &ifindex, &v, BPF_NOEXIST);
		}
		/* this frame won, or another CPU did first: the winner is in the map */
		w = bpf_map_lookup_elem(&nwf_lrn_any, &ifindex);
		if (!w)
			return NWF_DROP_INTERNAL; /* map full: nothing learned, fail closed */
	}
	p->lrn_ip[0] = NWF_LRN_VALID | (w->addr & 0xffffffffULL);
	p->has |= NWF_HAS_LEARNED;
	return NWF_LRN_POLICY;
}
#endif

#if NWF_LEARN_DHCP
#define NWF_DHCP_MAX_OPTS 64 /* options walked; a message with more teaches nothing */
#define NWF_DHCP_ACK 5
#define NWF_DHCP_RELEASE 7
#define NWF_DHCP_SERVER_PORT 67
#define NWF_DHCP_CLIENT_PORT 68

/* One lease slot. */
struct nwf_lease {
	__u64 word;    /* NWF_LRN_VALID | memory image of the address; 0: free */
	__u64 expires; /* bpf_ktime_get_boot_ns() deadline; ~0: infinite */
	__u64 server;  /* memory image of the IPv4 source of the last ACK (for the record only) */
};

/* The leases of a `dhcp` port. */
struct nwf_lrn_dhcp_val {
	struct nwf_lease slot[NWF_LRN_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NWF_LRN_MAX);
	__type(key, __u32);
	__type(value, struct nwf_lrn_dhcp_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nwf_lrn_dhcp SEC(".maps");

/* A port's entry with every slot free. */
static const struct nwf_lrn_dhcp_val nwf_lrn_dhcp_free = {};

/* What the walk found in a DHCP message. */
struct nwf_dhcp {
	__u64 chaddr; /* memory image (the first 6 bytes of the field) */
	__u32 ciaddr; /* memory images */
	__u32 yiaddr;
	__u32 lease;  /* option 51, host order */
	__u8 op;
	__u8 type;    /* option 53; 0: absent */
	__u8 has_lease;
};

struct nwf_dhcp_walk {
	void *ctx;
	struct nwf_dhcp *d;
	__u32 off;  /* frame offset of the current option */
	int result; /* 0 walking, 1 END reached, -1 not a message to learn from */
};

/* One option (a bpf_loop callback: verified once, whatever the number of options). */
static __always_inline long nwf_dhcp_step(struct nwf_dhcp_walk *w, const int kind)
{
	struct nwf_dhcp *d = w->d;
	__u8 ol[2];

	if (!nwf_load(w->ctx, kind, w->off, ol, 1))
		goto stop; /* the frame ended before END */
	if (ol[0] == 0) { /* PAD */
		w->off += 1;
		return 0;
	}
	if (ol[0] == 255) { /* END */
		w->result = 1;
		return 1;
	}
	if (!nwf_load(w->ctx, kind, w->off, ol, 2))
		goto stop;
	if (ol[0] == 53) {
		__u8 t;

		if (d->type || ol[1] != 1 || !nwf_load(w->ctx, kind, w->off + 2, &t, 1) || t == 0)
			goto stop;
		d->type = t;
	} else if (ol[0] == 51) {
		__u8 v[4];

		if (d->has_lease || ol[1] != 4 || !nwf_load(w->ctx, kind, w->off + 2, v, 4))
			goto stop;
		d->lease = nwf_be32(v);
		d->has_lease = 1;
	}
	w->off += 2 + ol[1];
	return 0;
stop:
	w->result = -1;
	return 1;
}

/* The callbacks, one per kind (a callback cannot take the kind as a constant). */
static long nwf_dhcp_step_tc(__u64 index, void *w)
{
	return nwf_dhcp_step(w, NWF_KIND_TC);
}

static long nwf_dhcp_step_xdp(__u64 index, void *w)
{
	return nwf_dhcp_step(w, NWF_KIND_XDP);
}

/*
 * The DHCP message of an IPv4 UDP frame (p has NWF_HAS_IP4_L4): the BOOTP
 * header at udp + 8, the magic cookie at + 236, the options from + 240.
 */
static __always_inline bool nwf_dhcp_parse(void *ctx, const int kind, struct nwf_dhcp *d)
{
	__u8 ihl, h[34], magic[4];
	__u32 bootp;
	struct nwf_dhcp_walk w = { .ctx = ctx, .d = d, .result = 0 };

	if (!nwf_load(ctx, kind, NWF_ETH_HLEN, &ihl, 1))
		return false;
	bootp = NWF_ETH_HLEN + (ihl & 0x0f) * 4 + 8;
	if (!nwf_load(ctx, kind, bootp, h, sizeof(h)) || !nwf_load(ctx, kind, bootp + 236, magic, 4))
		return false;
	if (magic[0] != 99 || magic[1] != 130 || magic[2] != 83 || magic[3] != 99)
		return false;
	d->op = h[0];
	__builtin_memcpy(&d->ciaddr, h + 12, 4);
	__builtin_memcpy(&d->yiaddr, h + 16, 4);
	__builtin_memcpy(&d->chaddr, h + 28, 6);
	w.off = bootp + 240;
	bpf_loop(NWF_DHCP_MAX_OPTS, kind == NWF_KIND_XDP ? nwf_dhcp_step_xdp : nwf_dhcp_step_tc, &w, 0);
	return w.result == 1 && d->type != 0; /* result 0: more options than the bound */
}

static __always_inline bool nwf_is_udp(const struct nwf_pkt *p, __u16 sport, __u16 dport)
{
	return p->proto == NWF_ETH_P_IPV4 && (p->has & NWF_HAS_IP4_L4) && p->ip_proto == 17 && p->l4_a == sport && p->l4_b == dport;
}

/* Is the frame's IPv4 source a trusted server (DHCPSERVER; none given: any)? */
static __always_inline bool nwf_dhcp_trusted(const struct nwf_pkt *p, const struct nwf_config *c)
{
	__u64 n = c->lrn_nsrv;

	if (n == 0)
		return true;
	for (__u32 i = 0; i < NWF_LRN_SERVERS; i++) {
		if (i >= n)
			break;
		if (c->lrn_srv[i] == p->ip4_src)
			return true;
	}
	return false;
}

/*
 * Before the policy: the live leases into p (the policy's learned tests read
 * p->lrn_ip) and NWF_LRN_POLICY; or, with none live, the DHCP-only table's
 * verdict.
 */
static __always_inline int nwf_dhcp_before(struct nwf_pkt *p, const struct nwf_config *c, const int dir, const struct nwf_lrn_dhcp_val *ls)
{
	__u64 now = bpf_ktime_get_boot_ns();
	bool live = false;

#pragma unroll
	for (int i = 0; i < NWF_LRN_SLOTS; i++) {
		__u64 w = ls->slot[i].word;

		if ((w & NWF_LRN_VALID) && now < ls->slot[i].expires) {
			p->lrn_ip[i] = w;
			live = true;
		}
	}
	if (live) {
		p->has |= NWF_HAS_LEARNED;
		return NWF_LRN_POLICY;
	}
	if (dir == NWF_DIR_IN) {
		const __u8 *d = (const __u8 *)&p->dst;
		bool bcast = (d[0] & d[1] & d[2] & d[3] & d[4] & d[5]) == 0xff;

		if ((p->dst == c->lrn_mac || bcast) && nwf_is_udp(p, NWF_DHCP_SERVER_PORT, NWF_DHCP_CLIENT_PORT) && nwf_dhcp_trusted(p, c))
			return NWF_STAT_ACCEPT;
		return NWF_DROP_POLICY;
	}
	if (p->src != c->lrn_mac)
		return NWF_DROP_MAC_SPOOF;
	if (nwf_is_udp(p, NWF_DHCP_CLIENT_PORT, NWF_DHCP_SERVER_PORT))
		return NWF_STAT_ACCEPT;
	if (p->proto == NWF_ETH_P_IPV4)
		return NWF_DROP_IP_SPOOF;
	if (p->proto == NWF_ETH_P_ARP)
		return NWF_DROP_ARP_SPOOF;
	return NWF_DROP_OTHER_L2;
}

/* Renew the slot holding addr (never shortening it), or claim a free or expired one. */
static __noinline bool nwf_lease_add(struct nwf_lrn_dhcp_val *ls, __u32 addr, __u64 expires, __u64 server)
{
	__u64 want = NWF_LRN_VALID | addr;
	__u64 now = bpf_ktime_get_boot_ns();

	if (!ls)
		return false;
	for (int i = 0; i < NWF_LRN_SLOTS; i++) {
		struct nwf_lease *l = &ls->slot[i];

		if (l->word == want) {
			if (expires > l->expires)
				l->expires = expires;
			l->server = server;
			return true;
		}
	}
	for (int i = 0; i < NWF_LRN_SLOTS; i++) {
		struct nwf_lease *l = &ls->slot[i];
		__u64 old = l->word;

		if ((old & NWF_LRN_VALID) && now < l->expires)
			continue; /* a live lease */
		if (__sync_val_compare_and_swap(&l->word, old, want) == old) {
			l->expires = expires;
			l->server = server;
			return true;
		}
	}
	return false; /* every slot holds a live lease: nothing learned */
}

/* End the lease of addr. */
static __noinline void nwf_lease_end(struct nwf_lrn_dhcp_val *ls, __u32 addr)
{
	__u64 old = NWF_LRN_VALID | addr;

	if (!ls)
		return;
	for (int i = 0; i < NWF_LRN_SLOTS; i++) {
		struct nwf_lease *l = &ls->slot[i];

		if (__sync_val_compare_and_swap(&l->word, old, 0) == old)
			l->expires = 0;
	}
}

/* After the frame was accepted: a trusted DHCPACK to the VM teaches, a DHCPRELEASE from the VM ends a lease. */
static __always_inline void nwf_dhcp_after(void *ctx, const int kind, const struct nwf_pkt *p, const struct nwf_config *c, const int dir, struct nwf_lrn_dhcp_val *ls)
{
	struct nwf_dhcp d = {};

	if (dir == NWF_DIR_IN) {
		if (!nwf_is_udp(p, NWF_DHCP_SERVER_PORT, NWF_DHCP_CLIENT_PORT) || !nwf_dhcp_trusted(p, c) || !nwf_dhcp_parse(ctx, kind, &d))
			return;
		if (d.op != 2 || d.type != NWF_DHCP_ACK || !d.has_lease || d.lease == 0 || d.chaddr != c->lrn_mac || !nwf_lrn_addr_ok(&d.yiaddr))
			return;
		nwf_lease_add(ls, d.yiaddr, d.lease == 0xffffffffU ? ~0ULL : bpf_ktime_get_boot_ns() + (__u64)d.lease * 1000000000ULL, p->ip4_src);
		return;
	}
	if (p->src != c->lrn_mac || !nwf_is_udp(p, NWF_DHCP_CLIENT_PORT, NWF_DHCP_SERVER_PORT) || !nwf_dhcp_parse(ctx, kind, &d))
		return;
	if (d.op == 1 && d.type == NWF_DHCP_RELEASE && d.ciaddr != 0)
		nwf_lease_end(ls, d.ciaddr);
}
#endif

#endif
