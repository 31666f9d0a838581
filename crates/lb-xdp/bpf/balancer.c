// SPDX-License-Identifier: GPL-2.0-only
//
// ExpressGateway's XDP programs.
//
// xdp_balancer: packets to a configured virtual IP and port go to a
// backend chosen by a flow table (established flows) or the virtual IP's
// Maglev table (new flows), encapsulated in IP-in-IP and sent out with
// XDP_TX or a redirect. Everything else passes to the kernel.
//
// xdp_decap: on a backend, strips the outer IPv4 header of IP-in-IP
// packets and passes them (and everything else) to the kernel.
//
// Userspace (crates/lb-xdp/src) owns every decision that is not per
// packet: it fills the maps below. Their layouts are mirrored there.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_VIPS 16
#define RING_SIZE 65537
#define MAX_BACKENDS 1024
#define FLOW_ENTRIES 65536

// Reasons a packet is dropped or passed, each a slot of `reasons`.
#define PASS_NOT_VIP 0
#define PASS_FRAGMENT 1
#define PASS_ICMP 2
#define PASS_SHORT 3
#define DROP_NO_BACKEND 4
#define DROP_NO_ROOM 5
#define REASONS 6

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define HASH_SEED 0x45474c42u

struct vip_key {
	__u32 addr;  // network order
	__u16 port;  // network order
	__u8 proto;  // IPPROTO_TCP or IPPROTO_UDP
	__u8 pad;
};

struct vip_meta {
	__u32 index;     // the VIP's row of `ring` and of `flow_stats`
	__u32 ring_size; // slots of its Maglev table; 0: no backend
};

struct backend {
	__u32 addr;    // network order; 0: slot not in use
	__u32 saddr;   // outer source address, network order
	__u32 ifindex; // egress interface
	__u8 dmac[6];  // next hop
	__u8 smac[6];  // egress interface's own
};

struct flow_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIPS * RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FLOW_ENTRIES);
	__type(key, struct flow_key);
	__type(value, __u32);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VIPS * MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct counter);
} flow_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASONS);
	__type(key, __u32);
	__type(value, struct counter);
} reasons SEC(".maps");

static __always_inline void count(void *map, __u32 slot, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(map, &slot);
	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline int verdict(__u32 reason, __u64 bytes, int action)
{
	count(&reasons, reason, bytes);
	return action;
}

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51u;
	k = rotl32(k, 15);
	k *= 0x1b873593u;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64u;
}

// The flow hash: MurmurHash3's 32-bit rounds over the four words of the
// 5-tuple as they lie in the packet, with a fixed seed, so every gateway
// and every restart maps a flow alike. Mirrored by `flow_hash` in Rust.
static __always_inline __u32 flow_hash(const struct flow_key *k)
{
	__u32 h = HASH_SEED;
	h = mix(h, k->src);
	h = mix(h, k->dst);
	h = mix(h, ((__u32)k->sport << 16) | k->dport);
	h = mix(h, k->proto);
	h ^= 16;
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

static __always_inline __u16 ip_checksum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int xdp_balancer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = (__u64)(data_end - data);
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return verdict(PASS_NOT_VIP, bytes, XDP_PASS);
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return verdict(PASS_SHORT, bytes, XDP_PASS);
	if (ip->ihl < 5)
		return verdict(PASS_SHORT, bytes, XDP_PASS);

	struct vip_key vk = {.addr = ip->daddr};
	struct flow_key fk = {.src = ip->saddr, .dst = ip->daddr, .proto = ip->protocol};
	// ICMP (path MTU discovery for a virtual IP among it) is the kernel's.
	if (ip->protocol == IPPROTO_ICMP)
		return verdict(PASS_ICMP, bytes, XDP_PASS);
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return verdict(PASS_NOT_VIP, bytes, XDP_PASS);
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return verdict(PASS_FRAGMENT, bytes, XDP_PASS);
	// Ports follow the IP header, options included; both TCP and UDP
	// start with them.
	__u16 *ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > data_end)
		return verdict(PASS_SHORT, bytes, XDP_PASS);
	vk.port = ports[1];
	vk.proto = ip->protocol;
	struct vip_meta *vip = bpf_map_lookup_elem(&vips, &vk);
	if (!vip)
		return verdict(PASS_NOT_VIP, bytes, XDP_PASS);
	fk.sport = ports[0];
	fk.dport = ports[1];

	__u32 id;
	struct backend *be = 0;
	__u32 *pinned = bpf_map_lookup_elem(&flows, &fk);
	if (pinned) {
		id = *pinned;
		be = bpf_map_lookup_elem(&backends, &id);
		if (be && be->addr == 0)
			be = 0;
	}
	if (!be) {
		__u32 size = vip->ring_size;
		if (size == 0 || size > RING_SIZE || vip->index >= MAX_VIPS)
			return verdict(DROP_NO_BACKEND, bytes, XDP_DROP);
		__u32 slot = vip->index * RING_SIZE + flow_hash(&fk) % size;
		__u32 *chosen = bpf_map_lookup_elem(&ring, &slot);
		if (!chosen)
			return verdict(DROP_NO_BACKEND, bytes, XDP_DROP);
		id = *chosen;
		be = bpf_map_lookup_elem(&backends, &id);
		if (!be || be->addr == 0)
			return verdict(DROP_NO_BACKEND, bytes, XDP_DROP);
		bpf_map_update_elem(&flows, &fk, &id, BPF_ANY);
	}
	if (id >= MAX_BACKENDS)
		return verdict(DROP_NO_BACKEND, bytes, XDP_DROP);
	count(&flow_stats, vip->index * MAX_BACKENDS + id, bytes);

	__u16 inner_len = bpf_ntohs(ip->tot_len);
	__u8 tos = ip->tos;
	__u32 daddr = be->addr;
	__u32 saddr = be->saddr;
	__u32 ifindex = be->ifindex;
	__u8 dmac[6], smac[6];
	__builtin_memcpy(dmac, be->dmac, 6);
	__builtin_memcpy(smac, be->smac, 6);

	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return verdict(DROP_NO_ROOM, bytes, XDP_DROP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ethhdr *outer_eth = data;
	struct iphdr *outer = (void *)(outer_eth + 1);
	if ((void *)(outer + 1) > data_end)
		return verdict(DROP_NO_ROOM, bytes, XDP_DROP);
	__builtin_memcpy(outer_eth->h_dest, dmac, 6);
	__builtin_memcpy(outer_eth->h_source, smac, 6);
	outer_eth->h_proto = bpf_htons(ETH_P_IP);
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	outer->tot_len = bpf_htons(inner_len + sizeof(struct iphdr));
	outer->id = 0;
	outer->frag_off = 0;
	outer->ttl = 64;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = saddr;
	outer->daddr = daddr;
	outer->check = ip_checksum(outer);
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(ifindex, 0);
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end || outer->protocol != IPPROTO_IPIP ||
	    outer->ihl != 5 || (outer->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return XDP_PASS;
	struct ethhdr copy;
	__builtin_memcpy(&copy, eth, sizeof(copy));
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct iphdr)))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth, &copy, sizeof(copy));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
