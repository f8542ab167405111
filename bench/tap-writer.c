// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * tap-writer: the benchmark's guest. It feeds a tap device the way QEMU's
 * user-space virtio-net backend does: open /dev/net/tun, TUNSETIFF with
 * IFF_TAP | IFF_NO_PI on an existing tap, and write whole Ethernet frames on
 * a non-blocking descriptor (so tun builds each frame in a page fragment and
 * runs an attached XDP program natively, before any skb exists).
 *
 *   tap-writer IFNAME CPU
 *
 * It pins itself to CPU, attaches to IFNAME (carrier on for as long as it
 * runs) and then reads commands on stdin, one per line:
 *
 *   send COUNT MAXMS HEXFRAME   write the frame COUNT times (at most MAXMS ms)
 *   quit                        (or end of input) detach and exit
 *
 * and answers each `send` with one line:
 *
 *   ok SENT FAILED CPU_NS WALL_NS
 *
 * CPU_NS is this thread's CPU time over the write loop
 * (CLOCK_THREAD_CPUTIME_ID): the user-space loop, the write system calls
 * and, as everything tun does for a frame runs in the writer's context
 * (XDP, the bridge, netfilter, the tc hooks, the receiving veth's backlog
 * processed when bottom halves are re-enabled), the whole path of each frame
 * except what the kernel defers to ksoftirqd (the benchmark adds that).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME 9216

static long long now_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode `hex` into `out`; the number of bytes, or -1. */
static int unhex(const char *hex, unsigned char *out, int max)
{
	int n = 0;

	while (hex[0] && hex[0] != '\n') {
		int hi = hexval(hex[0]), lo = hexval(hex[1]);

		if (hi < 0 || lo < 0 || n >= max)
			return -1;
		out[n++] = (unsigned char)(hi << 4 | lo);
		hex += 2;
	}
	return n;
}

int main(int argc, char **argv)
{
	static unsigned char frame[MAX_FRAME];
	static char line[2 * MAX_FRAME + 128];
	struct ifreq ifr;
	cpu_set_t cpus;
	int fd;

	if (argc != 3 || strlen(argv[1]) >= IFNAMSIZ) {
		fprintf(stderr, "usage: tap-writer IFNAME CPU\n");
		return 2;
	}
	CPU_ZERO(&cpus);
	CPU_SET(atoi(argv[2]), &cpus);
	if (sched_setaffinity(0, sizeof(cpus), &cpus) != 0) {
		perror("sched_setaffinity");
		return 1;
	}
	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		perror("open /dev/net/tun");
		return 1;
	}
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
		perror("TUNSETIFF");
		return 1;
	}
	printf("ready %s\n", ifr.ifr_name);
	fflush(stdout);

	while (fgets(line, sizeof(line), stdin)) {
		long long count, maxms, sent = 0, failed = 0, t0, c0, deadline;
		char hex[sizeof(line)];
		int len;

		if (strncmp(line, "quit", 4) == 0)
			break;
		if (sscanf(line, "send %lld %lld %s", &count, &maxms, hex) != 3 || count < 0 || maxms <= 0 ||
		    (len = unhex(hex, frame, sizeof(frame))) < 14) {
			printf("error bad command\n");
			fflush(stdout);
			continue;
		}
		t0 = now_ns(CLOCK_MONOTONIC);
		c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
		deadline = t0 + maxms * 1000000LL;
		for (long long i = 0; i < count; i++) {
			if (write(fd, frame, len) == len)
				sent++;
			else
				failed++;
			/* bounded in time as well as in count */
			if ((i & 4095) == 4095 && now_ns(CLOCK_MONOTONIC) > deadline)
				break;
		}
		printf("ok %lld %lld %lld %lld\n", sent, failed, now_ns(CLOCK_THREAD_CPUTIME_ID) - c0,
		       now_ns(CLOCK_MONOTONIC) - t0);
		fflush(stdout);
	}
	close(fd);
	return 0;
}
