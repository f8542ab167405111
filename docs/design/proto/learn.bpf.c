// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Prototype of IP learning in nwf-fast's tc programs (docs/design/ip-learning.md
 * section 2.2). Not the generated policy: a small fixed "static path" (the
 * clean-traffic tests that use $IP and $MAC) plus the learning mechanics the
 * real templates need:
 *
 *  - CTRL_IP_LEARNING=any: the first qualifying IPv4 frame from the VM writes
 *    its source into nwf_lrn_any with BPF_NOEXIST: the hash map's bucket lock
 *    makes the first writer win, every other CPU gets -EEXIST and reads the
 *    winner. From then on the static path tests the source against it.
 *  - CTRL_IP_LEARNING=dhcp: a DHCPACK sent to the VM by a trusted server (and
 *    accepted by the policy) is parsed with a bounded walk over its options
 *    with bpf_loop (53 message type, 51 lease time, anywhere among the first
 *    NWF_DHCP_MAX_OPTS options); yiaddr is claimed in one of NWF_LEASES slots with a 64-bit
 *    compare-and-swap (valid bit | address), its expiry (bpf_ktime_get_boot_ns
 *    based) stored next to it. A lease is live while now < expires; expired
 *    slots are reused by the program and cleared by user space. A DHCPRELEASE
 *    from the VM (ciaddr) frees its slot.
 *  - Every value user space needs (learned address, leases and expiries) is a
 *    plain map value it reads with bpf_map_lookup_elem / get_next_key.
 *
 * Build: clang-19 -O2 -g -target bpf -mcpu=v3 -Wall -Werror -c learn.bpf.c
 * (-mcpu=v3 for the BPF_ATOMIC compare-and-swap). -DNWF_NAIVE builds the
 * last-writer-wins variant the race test compares with.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

typedef _Bool bool;
#define true 1
#define false 0

#define MODE_ANY 1
#define MODE_DHCP 2
#define NWF_LEASES 4
#define NWF_SERVERS 4
#define NWF_DHCP_MAX_OPTS 64 /* options looked at; a message with more is not learned from */
#define VALID (1ULL << 32)

/* Per port (key: ifindex), written by user space. */
struct port_cfg {
	__u64 mac;		/* memory image of the VM MAC */
	__u32 mode;		/* MODE_ANY or MODE_DHCP */
	__u32 nservers;		/* DHCPSERVER count; 0: any server */
	__u32 servers[NWF_SERVERS]; /* memory images */
};

/* CTRL_IP_LEARNING=any: the learned address (memory image) and when. */
struct any_val {
	__u32 addr;
	__u32 pad;
	__u64 learned_ns;
};

struct lease {
	__u64 word;	/* VALID | address (memory image); 0: free */
	__u64 expires;	/* bpf_ktime_get_boot_ns() deadline; ~0: infinite */
};

/* CTRL_IP_LEARNING=dhcp: created (zeroed) by user space when the port is set up. */
struct leases {
	struct lease slot[NWF_LEASES];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct port_cfg);
} nwf_lrn_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct any_val);
} nwf_lrn_any SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct leases);
} nwf_lrn_dhcp SEC(".maps");

/* Counters: 0 accepted, 1 mac-spoof, 2 ip-spoof, 3 arp-spoof, 4 other, 5 learning-drop, 6 learned, 7 lost race, 8 ack-learned, 9 ack-ignored */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} nwf_lrn_stats SEC(".maps");

enum { ST_ACCEPT, ST_MAC, ST_IP, ST_ARP, ST_OTHER, ST_LEARNING, ST_LEARNED, ST_LOST, ST_ACK, ST_ACK_IGNORED };

static __always_inline void count(__u32 k)
{
	__u64 *c = bpf_map_lookup_elem(&nwf_lrn_stats, &k);

	if (c)
		__sync_fetch_and_add(c, 1);
}

static __always_inline int accept(void)
{
	count(ST_ACCEPT);
	return TC_ACT_OK;
}

static __always_inline int drop(__u32 why)
{
	count(why);
	return TC_ACT_SHOT;
}

struct pkt {
	__u64 dst, src;
	__u16 proto;
	bool ip4, udp, arp;
	__u8 ip_proto;
	__u32 saddr;		/* memory images */
	__u32 daddr;
	__u32 l4;		/* offset of the L4 header */
	__u16 sport, dport;
	__u16 arp_op;
	__u64 arp_sha;
	__u32 arp_spa;
};

static __always_inline bool load(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
	return off <= 0xffff && bpf_skb_load_bytes(skb, off, to, len) == 0;
}

static __always_inline bool parse(struct __sk_buff *skb, struct pkt *p)
{
	__u8 eth[14];

	__builtin_memset(p, 0, sizeof(*p));
	if (!load(skb, 0, eth, 14))
		return false;
	__builtin_memcpy(&p->dst, eth, 6);
	__builtin_memcpy(&p->src, eth + 6, 6);
	p->proto = skb->vlan_present ? 0x8100 : ((__u16)eth[12] << 8 | eth[13]);
	if (p->proto == 0x0800) {
		__u8 ip[20];

		if (!load(skb, 14, ip, 20))
			return true;
		p->ip4 = true;
		p->ip_proto = ip[9];
		__builtin_memcpy(&p->saddr, ip + 12, 4);
		__builtin_memcpy(&p->daddr, ip + 16, 4);
		p->l4 = 14 + (ip[0] & 0xf) * 4;
		bool first = ((ip[6] & 0x1f) | ip[7]) == 0;
		__u8 ports[4];
		if (p->ip_proto == 17 && first && load(skb, p->l4, ports, 4)) {
			p->udp = true;
			p->sport = (__u16)ports[0] << 8 | ports[1];
			p->dport = (__u16)ports[2] << 8 | ports[3];
		}
	} else if (p->proto == 0x0806) {
		__u8 a[28];

		if (load(skb, 14, a, 28) && a[0] == 0 && a[1] == 1 && a[2] == 8 && a[3] == 0 && a[4] == 6 && a[5] == 4) {
			p->arp = true;
			p->arp_op = (__u16)a[6] << 8 | a[7];
			__builtin_memcpy(&p->arp_sha, a + 8, 6);
			__builtin_memcpy(&p->arp_spa, a + 14, 4);
		}
	}
	return true;
}

static __always_inline bool mac_eq(__u64 a, __u64 b)
{
	return (a & 0xffffffffffffULL) == (b & 0xffffffffffffULL);
}

/* ---- DHCP -------------------------------------------------------------------------- */

struct dhcp {
	__u8 op;
	__u8 type;		/* option 53, 0 if absent */
	__u32 ciaddr, yiaddr;	/* memory images */
	__u64 chaddr;
	__u32 lease;		/* option 51, host order; 0 if absent */
	bool has_lease;
};

/* State of the option walk, shared with its bpf_loop callback. */
struct optwalk {
	struct __sk_buff *skb;
	struct dhcp *d;
	__u32 off;
	int result; /* 0 walking, 1 END reached, -1 give up */
};

/* One option (bpf_loop callback: verified once, whatever the number of iterations). */
static long opt_step(__u32 i, void *arg)
{
	struct optwalk *w = arg;
	struct dhcp *d = w->d;
	__u8 ol[2];

	if (!load(w->skb, w->off, ol, 1)) {
		w->result = -1; /* no END: the frame ended */
		return 1;
	}
	if (ol[0] == 0) { /* PAD */
		w->off += 1;
		return 0;
	}
	if (ol[0] == 255) { /* END */
		w->result = 1;
		return 1;
	}
	if (!load(w->skb, w->off, ol, 2)) {
		w->result = -1;
		return 1;
	}
	if (ol[0] == 53) {
		__u8 t;

		if (d->type || ol[1] != 1 || !load(w->skb, w->off + 2, &t, 1) || t == 0) {
			w->result = -1;
			return 1;
		}
		d->type = t;
	} else if (ol[0] == 51) {
		__u8 v[4];

		if (d->has_lease || ol[1] != 4 || !load(w->skb, w->off + 2, v, 4)) {
			w->result = -1;
			return 1;
		}
		d->lease = (__u32)v[0] << 24 | (__u32)v[1] << 16 | (__u32)v[2] << 8 | v[3];
		d->has_lease = true;
	}
	w->off += 2 + ol[1];
	return 0;
}

/*
 * The BOOTP header at udp+8 and the options after the magic cookie. Bounded:
 * at most NWF_DHCP_MAX_OPTS options (PAD counts), walked with bpf_loop (a
 * plain loop makes the verifier explore every path through every iteration:
 * it gave up at 1M instructions); each read is bpf_skb_load_bytes at a
 * variable offset. A read beyond the frame, a duplicate 53 or 51, or running
 * out of the bound means "not a message we learn from" (false).
 */
static __always_inline bool parse_dhcp(struct __sk_buff *skb, __u32 udp, struct dhcp *d)
{
	__u8 h[44];
	__u8 magic[4];
	struct optwalk w = { .skb = skb, .d = d, .off = udp + 8 + 240, .result = 0 };

	__builtin_memset(d, 0, sizeof(*d));
	if (!load(skb, udp + 8, h, 44) || !load(skb, udp + 8 + 236, magic, 4))
		return false;
	if (magic[0] != 99 || magic[1] != 130 || magic[2] != 83 || magic[3] != 99)
		return false;
	d->op = h[0];
	__builtin_memcpy(&d->ciaddr, h + 12, 4);
	__builtin_memcpy(&d->yiaddr, h + 16, 4);
	__builtin_memcpy(&d->chaddr, h + 28, 6);
	bpf_loop(NWF_DHCP_MAX_OPTS, opt_step, &w, 0);
	return w.result == 1 && d->type != 0; /* result 0: more options than the bound */
}

static __always_inline bool lease_live(const struct lease *l, __u64 now)
{
	return (l->word & VALID) && now < l->expires;
}

/* Is `addr` one of the port's live leases? */
static __always_inline bool leased(struct leases *ls, __u32 addr, __u64 now)
{
	for (int i = 0; i < NWF_LEASES; i++) {
		struct lease *l = &ls->slot[i];

		if (lease_live(l, now) && (__u32)l->word == addr)
			return true;
	}
	return false;
}

static __always_inline bool any_live(struct leases *ls, __u64 now)
{
	for (int i = 0; i < NWF_LEASES; i++)
		if (lease_live(&ls->slot[i], now))
			return true;
	return false;
}

/* Renew the slot holding addr, or claim a free or expired one with compare-and-swap. */
static __noinline bool learn_lease(struct leases *ls, __u32 addr, __u64 expires)
{
	__u64 want;
	__u64 now = bpf_ktime_get_boot_ns();

	if (!ls)
		return false;
	want = VALID | addr;
	for (int i = 0; i < NWF_LEASES; i++) {
		struct lease *l = &ls->slot[i];

		if (l->word == want) {
			if (expires > l->expires) /* a shorter lease does not shorten it (as libvirt) */
				l->expires = expires;
			return true;
		}
	}
	for (int i = 0; i < NWF_LEASES; i++) {
		struct lease *l = &ls->slot[i];
		__u64 old = l->word;

		if (old != 0 && lease_live(l, now))
			continue;
		if (__sync_val_compare_and_swap(&l->word, old, want) == old) {
			l->expires = expires;
			return true;
		}
	}
	return false; /* every slot holds a live lease: not learned (fail closed) */
}

static __noinline void release_lease(struct leases *ls, __u32 addr)
{
	if (!ls)
		return;
	for (int i = 0; i < NWF_LEASES; i++) {
		struct lease *l = &ls->slot[i];
		__u64 old = VALID | addr;

		__sync_val_compare_and_swap(&l->word, old, 0);
	}
}

/* ---- the static path: clean-traffic's $MAC/$IP tests, with $IP from a predicate ---- */

#define IP_ANY 0
#define IP_LEASES 1

static __always_inline bool ip_ok(__u32 kind, __u32 any_addr, struct leases *ls, __u32 addr, __u64 now)
{
	if (kind == IP_ANY)
		return addr == any_addr;
	return ls && leased(ls, addr, now);
}

static __always_inline int static_out(const struct pkt *p, const struct port_cfg *c, __u32 kind, __u32 any_addr, struct leases *ls)
{
	__u64 now = bpf_ktime_get_boot_ns();

	if (!mac_eq(p->src, c->mac))
		return drop(ST_MAC);
	if (p->proto == 0x0800) {
		if (!p->ip4)
			return drop(ST_IP);
		if (p->saddr == 0 && p->ip_proto == 17)
			return accept();
		return ip_ok(kind, any_addr, ls, p->saddr, now) ? accept() : drop(ST_IP);
	}
	if (p->proto == 0x0806) {
		if (!p->arp || !mac_eq(p->arp_sha, c->mac))
			return drop(ST_ARP);
		return ip_ok(kind, any_addr, ls, p->arp_spa, now) ? accept() : drop(ST_ARP);
	}
	if (p->proto == 0x8035 || p->proto == 0x0835) /* QEMU's announce (simplified) */
		return accept();
	return drop(ST_OTHER);
}

static __always_inline int static_in(const struct pkt *p)
{
	if (p->proto == 0x0800 || p->proto == 0x0806 || p->proto == 0x8035)
		return accept();
	return drop(ST_OTHER);
}

static __always_inline bool qualifies(__u32 saddr)
{
	__u8 first = saddr & 0xff; /* memory image: the first byte on the wire */

	return saddr != 0 && (first & 0xe0) != 0xe0;
}

static __always_inline bool trusted(const struct port_cfg *c, __u32 server)
{
	if (c->nservers == 0)
		return true;
	for (int i = 0; i < NWF_SERVERS; i++)
		if (i < c->nservers && c->servers[i] == server)
			return true;
	return false;
}

SEC("tc")
int lrn_from_vm(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct port_cfg *c = bpf_map_lookup_elem(&nwf_lrn_port, &ifindex);
	struct pkt p;

	if (!c || !parse(skb, &p))
		return drop(ST_OTHER); /* unknown port: fail closed */
	if (c->mode == MODE_ANY) {
		struct any_val *w = bpf_map_lookup_elem(&nwf_lrn_any, &ifindex);

		if (w)
			return static_out(&p, c, IP_ANY, w->addr, 0);
		/* libvirt's learning rules: the VM's MAC, then IPv4 or ARP */
		if (!mac_eq(p.src, c->mac))
			return drop(ST_MAC);
		if (p.proto == 0x0800) {
			if (p.ip4 && qualifies(p.saddr)) {
				struct any_val v = { .addr = p.saddr, .learned_ns = bpf_ktime_get_boot_ns() };

#ifdef NWF_NAIVE
				/* for comparison only: last writer wins, and the frame trusts its own write */
				if (bpf_map_update_elem(&nwf_lrn_any, &ifindex, &v, BPF_ANY) == 0) {
#else
				if (bpf_map_update_elem(&nwf_lrn_any, &ifindex, &v, BPF_NOEXIST) == 0) {
#endif
					count(ST_LEARNED);
					return static_out(&p, c, IP_ANY, p.saddr, 0);
				}
				w = bpf_map_lookup_elem(&nwf_lrn_any, &ifindex);
				if (!w)
					return drop(ST_LEARNING); /* map full: not learned, fail closed */
				if (w->addr != p.saddr)
					count(ST_LOST);
				return static_out(&p, c, IP_ANY, w->addr, 0);
			}
			return accept();
		}
		if (p.proto == 0x0806)
			return accept();
		return drop(ST_LEARNING);
	}
	if (c->mode == MODE_DHCP) {
		struct leases *ls = bpf_map_lookup_elem(&nwf_lrn_dhcp, &ifindex);
		__u64 now = bpf_ktime_get_boot_ns();

		if (!ls)
			return drop(ST_OTHER);
		if (p.udp && p.sport == 68 && p.dport == 67 && mac_eq(p.src, c->mac)) {
			struct dhcp d;

			if (parse_dhcp(skb, p.l4, &d) && d.op == 1 && d.type == 7 /* RELEASE */)
				release_lease(ls, d.ciaddr);
		}
		if (any_live(ls, now))
			return static_out(&p, c, IP_LEASES, 0, ls);
		/* libvirt's DHCP-only rules, from the VM */
		if (mac_eq(p.src, c->mac) && p.udp && p.sport == 68 && p.dport == 67)
			return accept();
		return drop(ST_LEARNING);
	}
	return drop(ST_OTHER);
}

SEC("tc")
int lrn_to_vm(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct port_cfg *c = bpf_map_lookup_elem(&nwf_lrn_port, &ifindex);
	struct pkt p;

	if (!c || !parse(skb, &p))
		return drop(ST_OTHER);
	if (c->mode == MODE_ANY)
		return bpf_map_lookup_elem(&nwf_lrn_any, &ifindex) ? static_in(&p) : accept();
	if (c->mode == MODE_DHCP) {
		struct leases *ls = bpf_map_lookup_elem(&nwf_lrn_dhcp, &ifindex);
		__u64 now = bpf_ktime_get_boot_ns();
		bool dhcp_reply = p.udp && p.sport == 67 && p.dport == 68;
		struct dhcp d;

		if (!ls)
			return drop(ST_OTHER);
		/* the verdict first: only a frame the policy accepts may teach */
		if (any_live(ls, now)) {
			if (static_in(&p) != TC_ACT_OK)
				return TC_ACT_SHOT;
		} else {
			bool to_vm = mac_eq(p.dst, c->mac) || mac_eq(p.dst, 0xffffffffffffULL);

			if (!(to_vm && dhcp_reply && trusted(c, p.saddr)))
				return drop(ST_LEARNING);
			count(ST_ACCEPT);
		}
		if (dhcp_reply && trusted(c, p.saddr)) {
			if (parse_dhcp(skb, p.l4, &d) && d.op == 2 && d.type == 5 && d.has_lease && d.lease > 0 && mac_eq(d.chaddr, c->mac) && d.yiaddr != 0) {
				__u64 exp = d.lease == 0xffffffff ? ~0ULL : now + (__u64)d.lease * 1000000000ULL;

				count(learn_lease(ls, d.yiaddr, exp) ? ST_ACK : ST_ACK_IGNORED);
			} else {
				count(ST_ACK_IGNORED);
			}
		}
		return TC_ACT_OK;
	}
	return drop(ST_OTHER);
}

char LICENSE[] SEC("license") = "GPL";
