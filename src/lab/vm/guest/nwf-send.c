/*
 * nwf-send: the guest's frame sender (nwf-fast vmlab).
 *
 * Runs inside a test guest (built with gcc -static, no dependencies) and
 * sends exactly the Ethernet frames a test asks for from one interface
 * through an AF_PACKET raw socket: legitimate IPv4/UDP, ARP and QEMU's
 * announce RARP, and spoofed kinds (source MAC, source IP, ARP sender IP,
 * ARP sender MAC, gratuitous ARP for another IP, other RARP). Every frame
 * carries a 16-byte marker at offset 42 (the UDP payload of an IPv4 frame
 * without options, the trailer after an ARP/RARP body), so a receiver can
 * count what arrived per kind:
 *
 *   0  "NWFM"   magic
 *   4  1        version
 *   5  kind     1..9 (the table below)
 *   6  tag      u16, big endian: which guest (and NIC) sent it
 *   8  step     u8: which step of the guest's scenario (-x)
 *   9  seq      u24, big endian: per kind, in this run
 *  12  total    u32, big endian: over all kinds of this run
 *
 * Frames are 60 bytes (the Ethernet minimum without FCS), sent round-robin
 * over the kinds asked for: COUNT of each (-n), or paced at PPS frames per
 * second (-r) until SECONDS pass (-t), whichever ends first. With -o FILE the
 * frames are written to FILE (u16 big-endian length, then the bytes) instead
 * of being sent, so they can be checked without a network.
 *
 * Every loop is bounded. Output: one line per kind at the end
 * ("NWF-SEND kind=udp sent=N errors=E"), progress every 5 s when pacing.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_LEN 60
#define MARKER_OFF 42
#define MAX_FRAMES 16000000u /* the per-kind sequence number has 24 bits */

enum kind {
	K_UDP = 1,      /* legitimate IPv4/UDP to the peer */
	K_ARP = 2,      /* legitimate ARP request for the peer's IP */
	K_MAC = 3,      /* IPv4/UDP with a spoofed Ethernet source */
	K_IP = 4,       /* IPv4/UDP with a spoofed IP source */
	K_ARPIP = 5,    /* ARP request with a spoofed sender IP */
	K_ARPMAC = 6,   /* ARP request with a spoofed sender MAC */
	K_GARP = 7,     /* gratuitous ARP for another IP */
	K_RARP = 8,     /* RARP request for another MAC (not QEMU's announce) */
	K_ANNOUNCE = 9, /* QEMU's announce-self RARP (legitimate) */
	K_MAX = 9,
};

static const char *const kind_names[K_MAX + 1] = {
	[K_UDP] = "udp", [K_ARP] = "arp", [K_MAC] = "mac", [K_IP] = "ip", [K_ARPIP] = "arpip",
	[K_ARPMAC] = "arpmac", [K_GARP] = "garp", [K_RARP] = "rarp", [K_ANNOUNCE] = "announce",
};

struct cfg {
	const char *ifname;
	const char *outfile;
	uint8_t mac[6], peer_mac[6], spoof_mac[6];
	uint8_t ip[4], peer_ip[4], spoof_ip[4];
	int have_mac, have_ip, have_peer_mac, have_peer_ip, have_spoof_mac, have_spoof_ip;
	uint16_t tag;
	uint8_t step;
	int kinds[K_MAX];
	int nkinds;
	unsigned long count; /* of each kind; 0: no count limit */
	double pps;          /* 0: unpaced */
	double seconds;      /* 0: no time limit */
	int quiet;
};

static void die(const char *msg)
{
	fprintf(stderr, "nwf-send: %s\n", msg);
	exit(2);
}

static int parse_mac(const char *s, uint8_t out[6])
{
	unsigned v[6];
	char end;
	if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &end) != 6)
		return -1;
	for (int i = 0; i < 6; i++) {
		if (v[i] > 255)
			return -1;
		out[i] = (uint8_t)v[i];
	}
	return 0;
}

static int parse_ip(const char *s, uint8_t out[4])
{
	struct in_addr a;
	if (inet_pton(AF_INET, s, &a) != 1)
		return -1;
	memcpy(out, &a, 4);
	return 0;
}

static int kind_of(const char *name)
{
	for (int k = 1; k <= K_MAX; k++)
		if (strcmp(name, kind_names[k]) == 0)
			return k;
	return 0;
}

static void parse_kinds(struct cfg *c, const char *list)
{
	char buf[256];
	if (strlen(list) >= sizeof(buf))
		die("kind list too long");
	strcpy(buf, list);
	c->nkinds = 0;
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (strcmp(tok, "all") == 0) {
			for (int k = 1; k <= K_MAX && c->nkinds < K_MAX; k++)
				c->kinds[c->nkinds++] = k;
			continue;
		}
		int k = kind_of(tok);
		if (!k) {
			fprintf(stderr, "nwf-send: unknown kind '%s'\n", tok);
			exit(2);
		}
		if (c->nkinds >= K_MAX)
			die("too many kinds");
		c->kinds[c->nkinds++] = k;
	}
	if (!c->nkinds)
		die("no kinds");
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static uint16_t ip_checksum(const uint8_t *h, int len)
{
	uint32_t s = 0;
	for (int i = 0; i < len; i += 2)
		s += (uint32_t)(h[i] << 8 | h[i + 1]);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static const uint8_t BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const uint8_t ZERO[6] = {0};

static void eth(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	put16(f + 12, type);
}

/* IPv4/UDP to the peer, port 9 (discard); the payload is the marker (and 2 bytes of zeros). */
static void udp(uint8_t *f, const uint8_t src_mac[6], const uint8_t dst_mac[6], const uint8_t src_ip[4], const uint8_t dst_ip[4])
{
	eth(f, dst_mac, src_mac, 0x0800);
	uint8_t *ip = f + 14;
	ip[0] = 0x45;
	put16(ip + 2, FRAME_LEN - 14); /* total length */
	put16(ip + 4, 0);              /* id */
	put16(ip + 6, 0x4000);         /* DF */
	ip[8] = 64;
	ip[9] = 17;
	memcpy(ip + 12, src_ip, 4);
	memcpy(ip + 16, dst_ip, 4);
	put16(ip + 10, ip_checksum(ip, 20));
	uint8_t *u = ip + 20;
	put16(u, 40000);
	put16(u + 2, 9);
	put16(u + 4, FRAME_LEN - 34);
	put16(u + 6, 0); /* no UDP checksum (allowed for IPv4) */
}

/* ARP (0x0806) or RARP (0x8035) with Ethernet/IPv4 addresses. */
static void arp(uint8_t *f, uint16_t type, const uint8_t eth_dst[6], const uint8_t eth_src[6], uint16_t op, const uint8_t sha[6],
		const uint8_t spa[4], const uint8_t tha[6], const uint8_t tpa[4])
{
	eth(f, eth_dst, eth_src, type);
	uint8_t *a = f + 14;
	put16(a, 1);
	put16(a + 2, 0x0800);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, op);
	memcpy(a + 8, sha, 6);
	memcpy(a + 14, spa, 4);
	memcpy(a + 18, tha, 6);
	memcpy(a + 24, tpa, 4);
}

static void build(const struct cfg *c, int kind, uint32_t seq, uint32_t total, uint8_t *f)
{
	static const uint8_t ip0[4] = {0};
	memset(f, 0, FRAME_LEN);
	switch (kind) {
	case K_UDP: udp(f, c->mac, c->peer_mac, c->ip, c->peer_ip); break;
	case K_ARP: arp(f, 0x0806, BCAST, c->mac, 1, c->mac, c->ip, ZERO, c->peer_ip); break;
	case K_MAC: udp(f, c->spoof_mac, c->peer_mac, c->ip, c->peer_ip); break;
	case K_IP: udp(f, c->mac, c->peer_mac, c->spoof_ip, c->peer_ip); break;
	case K_ARPIP: arp(f, 0x0806, BCAST, c->mac, 1, c->mac, c->spoof_ip, ZERO, c->peer_ip); break;
	case K_ARPMAC: arp(f, 0x0806, BCAST, c->mac, 1, c->spoof_mac, c->ip, ZERO, c->peer_ip); break;
	case K_GARP: arp(f, 0x0806, BCAST, c->mac, 1, c->mac, c->spoof_ip, ZERO, c->spoof_ip); break;
	case K_RARP: arp(f, 0x8035, BCAST, c->mac, 3, c->mac, ip0, c->spoof_mac, ip0); break;
	case K_ANNOUNCE: arp(f, 0x8035, BCAST, c->mac, 3, c->mac, ip0, c->mac, ip0); break;
	default: die("internal: unknown kind");
	}
	uint8_t *m = f + MARKER_OFF;
	memcpy(m, "NWFM", 4);
	m[4] = 1;
	m[5] = (uint8_t)kind;
	put16(m + 6, c->tag);
	put32(m + 8, seq & 0xffffffu);
	m[8] = c->step;
	put32(m + 12, total);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
	if (s <= 0)
		return;
	struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

static int open_socket(const char *ifname)
{
	int fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0) {
		perror("nwf-send: socket(AF_PACKET)");
		exit(1);
	}
	struct sockaddr_ll sll = {0};
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = 0; /* send only */
	sll.sll_ifindex = (int)if_nametoindex(ifname);
	if (!sll.sll_ifindex) {
		fprintf(stderr, "nwf-send: no interface %s\n", ifname);
		exit(1);
	}
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) != 0) {
		perror("nwf-send: bind");
		exit(1);
	}
	return fd;
}

/* Sends one frame; a full queue is retried for up to 1 s. Returns 0 or -1. */
static int send_frame(int fd, FILE *out, const uint8_t *f)
{
	if (out) {
		uint8_t len[2];
		put16(len, FRAME_LEN);
		return fwrite(len, 1, 2, out) == 2 && fwrite(f, 1, FRAME_LEN, out) == FRAME_LEN ? 0 : -1;
	}
	for (int attempt = 0; attempt < 1000; attempt++) {
		if (send(fd, f, FRAME_LEN, 0) == FRAME_LEN)
			return 0;
		if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR)
			return -1;
		sleep_s(0.001);
	}
	return -1;
}

static void usage(void)
{
	fputs("usage: nwf-send (-i IFACE | -o FILE) -s MAC -a IP -d PEER_MAC -A PEER_IP [-S SPOOF_MAC] [-I SPOOF_IP]\n"
	      "                [-g TAG] [-x STEP] [-k KIND,...|all] [-n COUNT] [-r PPS] [-t SECONDS] [-q]\n"
	      "kinds: udp arp mac ip arpip arpmac garp rarp announce\n",
	      stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	struct cfg c = {0};
	parse_kinds(&c, "udp");
	int opt;
	while ((opt = getopt(argc, argv, "i:o:s:a:d:A:S:I:g:x:k:n:r:t:q")) != -1) {
		switch (opt) {
		case 'i': c.ifname = optarg; break;
		case 'o': c.outfile = optarg; break;
		case 's': if (parse_mac(optarg, c.mac)) die("bad -s MAC"); c.have_mac = 1; break;
		case 'a': if (parse_ip(optarg, c.ip)) die("bad -a IP"); c.have_ip = 1; break;
		case 'd': if (parse_mac(optarg, c.peer_mac)) die("bad -d MAC"); c.have_peer_mac = 1; break;
		case 'A': if (parse_ip(optarg, c.peer_ip)) die("bad -A IP"); c.have_peer_ip = 1; break;
		case 'S': if (parse_mac(optarg, c.spoof_mac)) die("bad -S MAC"); c.have_spoof_mac = 1; break;
		case 'I': if (parse_ip(optarg, c.spoof_ip)) die("bad -I IP"); c.have_spoof_ip = 1; break;
		case 'g': c.tag = (uint16_t)strtoul(optarg, NULL, 0); break;
		case 'x': c.step = (uint8_t)strtoul(optarg, NULL, 0); break;
		case 'k': parse_kinds(&c, optarg); break;
		case 'n': c.count = strtoul(optarg, NULL, 0); break;
		case 'r': c.pps = strtod(optarg, NULL); break;
		case 't': c.seconds = strtod(optarg, NULL); break;
		case 'q': c.quiet = 1; break;
		default: usage();
		}
	}
	if ((!c.ifname) == (!c.outfile) || !c.have_mac || !c.have_ip || !c.have_peer_mac || !c.have_peer_ip)
		usage();
	if (!c.count && !c.seconds)
		die("give -n COUNT or -t SECONDS (every run is bounded)");
	if (c.pps < 0 || c.seconds < 0)
		die("negative -r or -t");
	/* Spoofed values default to the real ones with the last byte changed. */
	if (!c.have_spoof_mac) {
		memcpy(c.spoof_mac, c.mac, 6);
		c.spoof_mac[5] ^= 0x5a;
	}
	if (!c.have_spoof_ip) {
		memcpy(c.spoof_ip, c.ip, 4);
		c.spoof_ip[3] = (uint8_t)(c.spoof_ip[3] + 100);
	}

	FILE *out = NULL;
	int fd = -1;
	if (c.outfile) {
		out = fopen(c.outfile, "wb");
		if (!out) {
			perror("nwf-send: open output");
			return 1;
		}
	} else {
		fd = open_socket(c.ifname);
	}

	unsigned long sent[K_MAX + 1] = {0}, errors[K_MAX + 1] = {0};
	unsigned long limit = c.count ? c.count * (unsigned long)c.nkinds : MAX_FRAMES;
	if (limit > MAX_FRAMES)
		limit = MAX_FRAMES;
	double t0 = now_s(), next_report = t0 + 5;
	/* The pacing schedule: frame i goes at sched0 + i/pps. A guest that was
	 * paused (live migration, a starved TCG vCPU) or whose clock stepped
	 * finds itself far off that schedule: more than a second behind, it would
	 * send the backlog as one burst; more than a second ahead (the clock went
	 * back), it would stall for the step. Either way it starts the schedule
	 * again from now, and says so, so the rate stays the one asked for. */
	double sched0 = t0;
	uint8_t f[FRAME_LEN];
	uint32_t total = 0;
	for (unsigned long i = 0; i < limit; i++) {
		double t = now_s();
		if (c.seconds && t - t0 >= c.seconds)
			break;
		if (c.pps > 0) {
			double d = sched0 + (double)i / c.pps - t;
			if (d > 1.0 || d < -1.0) {
				if (!c.quiet) {
					printf("NWF-SEND resync tag=%u step=%u t=%.1f off=%.2f\n", c.tag, c.step, t - t0, d);
					fflush(stdout);
				}
				sched0 = t - (double)i / c.pps;
				d = 0;
			}
			sleep_s(d);
		}
		int kind = c.kinds[i % (unsigned long)c.nkinds];
		build(&c, kind, (uint32_t)sent[kind] + (uint32_t)errors[kind], total++, f);
		if (send_frame(fd, out, f) == 0)
			sent[kind]++;
		else
			errors[kind]++;
		if (c.pps > 0 && !c.quiet && now_s() >= next_report) {
			printf("NWF-SEND progress tag=%u step=%u t=%.1f frames=%u\n", c.tag, c.step, now_s() - t0, total);
			fflush(stdout);
			next_report += 5;
		}
	}
	for (int k = 1; k <= K_MAX; k++) {
		int asked = 0;
		for (int j = 0; j < c.nkinds; j++)
			asked |= c.kinds[j] == k;
		if (!asked)
			continue;
		printf("NWF-SEND tag=%u step=%u if=%s kind=%s sent=%lu errors=%lu\n", c.tag, c.step, c.ifname ? c.ifname : "-", kind_names[k], sent[k], errors[k]);
	}
	fflush(stdout);
	if (out && fclose(out) != 0)
		return 1;
	if (fd >= 0)
		close(fd);
	return 0;
}
