// SPDX-License-Identifier: GPL-2.0-only
//
// The XDP benchmark's floor: the least an XDP program that forwards a
// datagram can do on this link. Every IPv4 UDP packet is redirected
// unchanged to the interface EGRESS (an index given at build time, -D);
// everything else passes. No lookup, no counter, no encapsulation: what it
// costs per packet is the driver's part, which any XDP program pays.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int xdp_floor(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	return bpf_redirect(EGRESS, 0);
}

char LICENSE[] SEC("license") = "GPL";
