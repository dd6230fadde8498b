/* What VXLAN encapsulation in switchd itself (issue 13, mechanism B) would
 * add per frame in user space, measured without building it: the work on a
 * frame already in a UMEM-like buffer (4 KiB frames, 256 bytes of
 * headroom), as switchd's pipeline would do it between RX and TX ring.
 *
 *   encap: write the 50-byte outer header (Ethernet to the peer's next hop,
 *          IPv4 with its checksum, UDP with a source port hashed from the
 *          inner flow as RFC 7348 says, checksum 0, VXLAN with the VNI)
 *          into the headroom and move the frame start back 50 bytes (what
 *          switchd already does for a VLAN push: the descriptor's offset).
 *   decap: check the outer headers (EtherType, IPv4 version/IHL, not a
 *          fragment, UDP, our address, port 4789, VXLAN I flag), map the
 *          VNI to a VLAN (4096-entry table), find the peer by source
 *          address (a small table, for per-peer counters and MAC->VTEP
 *          learning), count, and move the frame start forward 50 bytes.
 *
 * Frames cycle through FRAMES buffers so the loop does not live in L1
 * alone. Prints ns per frame for each. Not a test; bench/overlay_mechanism.py
 * compiles and runs it.
 *
 *   cc -O2 -o /tmp/encap bench/overlay_encap_cost.c && /tmp/encap [frames]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FRAME 4096
#define HEADROOM 256
#define FRAMES 4096
#define OUTER 50

struct peer { uint32_t ip; uint64_t rx, tx; };

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static uint16_t csum20(const uint8_t *h) {
    uint32_t s = 0;
    for (int i = 0; i < 20; i += 2) s += (uint32_t)h[i] << 8 | h[i + 1];
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static uint32_t flow_hash(const uint8_t *f) {
    /* inner MACs and, for IPv4, addresses and ports: 32-bit words mixed
     * by multiply-xor (what a jhash-like flow hash costs) */
    uint32_t w[6];
    memcpy(w, f, 12);
    if (f[12] == 0x08 && f[13] == 0x00) memcpy(w + 3, f + 26, 12);
    else w[3] = w[4] = w[5] = 0;
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 6; i++) h = (h ^ w[i]) * 0xff51afd7ed558ccdull;
    return (uint32_t)(h >> 32);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 20000000;
    int len = argc > 2 ? atoi(argv[2]) : 106; /* a 64-byte UDP payload's frame */
    uint8_t *umem = aligned_alloc(4096, (size_t)FRAME * FRAMES);
    uint32_t off[FRAMES];
    uint16_t vni2vlan[1 << 12]; /* VLAN -> VNI is the other direction; small */
    uint32_t vlan2vni[4096];
    struct peer peers[8];
    uint8_t tmpl[OUTER];
    uint32_t local = 0xc0000201, remote = 0xc0000202; /* decap runs on the remote */
    for (int i = 0; i < 4096; i++) { vlan2vni[i] = i; vni2vlan[i] = i; }
    for (int i = 0; i < 8; i++) peers[i] = (struct peer){0xc0000208 - i, 0, 0}; /* the sender last */
    /* template: dst MAC (peer's next hop), src MAC, 0x0800, IPv4, UDP, VXLAN */
    memset(tmpl, 0, sizeof tmpl);
    memcpy(tmpl, "\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00", 14);
    uint8_t *ip = tmpl + 14;
    ip[0] = 0x45; ip[6] = 0x40; ip[8] = 64; ip[9] = 17;
    for (int i = 0; i < 4; i++) { ip[12 + i] = local >> (24 - 8 * i); ip[16 + i] = remote >> (24 - 8 * i); }
    tmpl[36] = 4789 >> 8; tmpl[37] = 4789 & 0xff;
    tmpl[42] = 0x08;
    /* inner frames: untagged IPv4/UDP, varied addresses */
    for (int i = 0; i < FRAMES; i++) {
        uint8_t *f = umem + (size_t)i * FRAME + HEADROOM;
        memset(f, 0, len);
        memcpy(f, "\x02\x00\x00\x00\x01\x02\x02\x00\x00\x00\x01\x01\x08\x00\x45", 15);
        f[26] = 10; f[29] = i & 0xff; f[30] = 10; f[33] = (i >> 8) & 0xff; f[35] = i & 0xff;
        off[i] = HEADROOM;
    }
    volatile uint64_t sink = 0;
    uint16_t ipid = 0;

    /* encap */
    uint64_t t0 = now_ns();
    for (long k = 0; k < n; k++) {
        int i = k & (FRAMES - 1);
        uint8_t *base = umem + (size_t)i * FRAME;
        uint8_t *f = base + off[i];
        uint32_t vni = vlan2vni[100];
        uint8_t *o = f - OUTER;
        memcpy(o, tmpl, OUTER);
        uint16_t tot = len + OUTER - 14;
        o[16] = tot >> 8; o[17] = tot & 0xff;
        o[18] = ipid >> 8; o[19] = ipid & 0xff; ipid++;
        uint16_t c = csum20(o + 14);
        o[24] = c >> 8; o[25] = c & 0xff;
        uint16_t sport = 49152 + (flow_hash(f) % 16384);
        o[34] = sport >> 8; o[35] = sport & 0xff;
        uint16_t ulen = tot - 20;
        o[38] = ulen >> 8; o[39] = ulen & 0xff;
        o[46] = vni >> 16; o[47] = vni >> 8; o[48] = vni;
        off[i] -= OUTER;
        peers[0].tx++;
        sink += o[25];
        /* undo, so the next round encaps the same inner frame */
        off[i] += OUTER;
    }
    uint64_t t1 = now_ns();
    double enc = (double)(t1 - t0) / n;

    /* prepare encapsulated frames for decap */
    for (int i = 0; i < FRAMES; i++) {
        uint8_t *f = umem + (size_t)i * FRAME + HEADROOM;
        uint8_t *o = f - OUTER;
        memcpy(o, tmpl, OUTER);
        o[48] = 100;
        off[i] = HEADROOM - OUTER;
    }
    uint64_t bad = 0;
    t0 = now_ns();
    for (long k = 0; k < n; k++) {
        int i = k & (FRAMES - 1);
        uint8_t *o = umem + (size_t)i * FRAME + off[i];
        if (o[12] != 0x08 || o[13] != 0x00 || o[14] != 0x45 || (o[20] & 0x3f) || o[21] || o[23] != 17 ||
            (((uint32_t)o[30] << 24 | o[31] << 16 | o[32] << 8 | o[33]) != remote) ||
            o[36] != (4789 >> 8) || o[37] != (4789 & 0xff) || !(o[42] & 0x08)) {
            bad++;
            continue;
        }
        uint32_t vni = (uint32_t)o[46] << 16 | o[47] << 8 | o[48];
        uint16_t vlan = vni < 4096 ? vni2vlan[vni] : 0;
        if (!vlan) { bad++; continue; }
        uint32_t src = (uint32_t)o[26] << 24 | o[27] << 16 | o[28] << 8 | o[29];
        int p = 0;
        while (p < 8 && peers[p].ip != src) p++;
        if (p < 8) peers[p].rx++;
        sink += vlan + o[OUTER];
        /* the frame now starts 50 bytes later; leave it for the next round */
    }
    t1 = now_ns();
    double dec = (double)(t1 - t0) / n;
    printf("encap_ns %.1f\ndecap_ns %.1f\nframes %ld\nframe_len %d\nbad %llu\nsink %llu\n", enc, dec, n, len,
           (unsigned long long)bad, (unsigned long long)sink);
    return 0;
}
