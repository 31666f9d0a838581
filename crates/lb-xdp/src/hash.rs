//! The flow hash, as the kernel program computes it.

/// The hash the kernel program gives a new flow to pick its Maglev slot
/// (`flow_hash` in `bpf/balancer.c`): MurmurHash3's 32-bit rounds over the
/// 5-tuple's four words as they lie in the packet, with a fixed seed, so a
/// restarted gateway and a second one pick alike. Addresses and ports are
/// given in host order here.
pub fn flow_hash(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    sport: u16,
    dport: u16,
    proto: u8,
) -> u32 {
    // The program loads network-order bytes as native words.
    let word = |ip: std::net::Ipv4Addr| u32::from_ne_bytes(ip.octets());
    let port = |p: u16| u32::from(u16::from_ne_bytes(p.to_be_bytes()));
    let mut h = SEED;
    h = mix(h, word(src));
    h = mix(h, word(dst));
    h = mix(h, (port(sport) << 16) | port(dport));
    h = mix(h, u32::from(proto));
    h ^= 16;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

const SEED: u32 = 0x4547_4c42;

fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn the_hash_is_fixed_and_spreads() {
        let a = flow_hash(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 10),
            40000,
            80,
            6,
        );
        assert_eq!(
            a,
            flow_hash(
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 10),
                40000,
                80,
                6
            )
        );
        let mut slots = [0u32; 7];
        for port in 0..7000u16 {
            let h = flow_hash(
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 10),
                30000 + port,
                80,
                6,
            );
            slots[(h % 7) as usize] += 1;
        }
        assert!(slots.iter().all(|&n| (800..1200).contains(&n)), "{slots:?}");
        assert_ne!(
            a,
            flow_hash(
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 10),
                40000,
                80,
                17
            )
        );
    }
}
