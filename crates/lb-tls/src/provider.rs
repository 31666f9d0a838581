//! The one crypto provider every TLS endpoint of the gateway uses, and the
//! protocol versions `[runtime.tls]` allows.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::SupportedProtocolVersion;

/// aws-lc-rs with rustls' default suites and key exchanges; built with the
/// `prefer-post-quantum` feature, so X25519MLKEM768 is offered first.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12_AND_13: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The versions offered and accepted, on both sides of the proxy.
pub(crate) fn versions(tls13_only: bool) -> &'static [&'static SupportedProtocolVersion] {
    if tls13_only {
        TLS13_ONLY
    } else {
        TLS12_AND_13
    }
}
