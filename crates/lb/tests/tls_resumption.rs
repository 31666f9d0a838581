//! Session resumption on `h1s` listeners with `openssl s_client`
//! (`-sess_out` / `-sess_in`): tickets resume on TLS 1.3 and 1.2, a ticket
//! issued under the previous key still resumes after a rotation (through
//! the overlap), and not once the overlap has passed.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backend::{named, Proto};
use common::tls::{s_client, Pki};
use common::{free_addr, Gateway};

fn config(listen: SocketAddr, backend: SocketAddr, pki: &Pki, runtime: &str) -> String {
    let cert = pki.server("site", &["a.test"]);
    format!(
        r#"
[runtime.tls]
{runtime}

[[listeners]]
address = "{listen}"
protocol = "h1s"
backends = [{{ address = "{backend}" }}]
[listeners.tls]
cert_path = {:?}
key_path = {:?}
"#,
        cert.cert_path, cert.key_path
    )
}

fn session(pki: &Pki, listen: SocketAddr, version: &str, out: &str) {
    let first = s_client(
        listen,
        pki,
        &["-servername", "a.test", version, "-sess_out", out],
        "a.test",
    );
    assert!(first.output.contains("New, TLSv1."), "{}", first.output);
    assert!(first.output.contains("HTTP/1.1 200 OK"), "{}", first.output);
}

fn resume(pki: &Pki, listen: SocketAddr, version: &str, file: &str) -> String {
    let run = s_client(
        listen,
        pki,
        &["-servername", "a.test", version, "-sess_in", file],
        "a.test",
    );
    assert!(run.output.contains("HTTP/1.1 200 OK"), "{}", run.output);
    run.output
}

#[test]
fn tickets_resume_sessions_on_tls13_and_tls12() {
    let pki = Pki::new("resume");
    let backend = named(Proto::H1, "ok");
    let listen = free_addr();
    let _gw = Gateway::start(&config(listen, backend.addr, &pki, ""), &[listen]);
    for (version, reused) in [
        ("-tls1_3", "Reused, TLSv1.3"),
        ("-tls1_2", "Reused, TLSv1.2"),
    ] {
        let file = pki.dir.join(format!("session{version}.pem"));
        let file = file.to_str().unwrap();
        session(&pki, listen, version, file);
        let output = resume(&pki, listen, version, file);
        assert!(output.contains(reused), "{version}: {output}");
    }
}

#[test]
fn a_ticket_of_the_previous_key_resumes_through_the_overlap_only() {
    const INTERVAL: u64 = 2;
    let pki = Pki::new("rotate");
    let backend = named(Proto::H1, "ok");
    let listen = free_addr();
    let runtime = format!(
        "ticket_rotation_interval_seconds = {INTERVAL}\nticket_rotation_overlap_seconds = {INTERVAL}"
    );
    let gw = Gateway::start(&config(listen, backend.addr, &pki, &runtime), &[listen]);
    // TLS 1.2: openssl keeps offering a 1.2 ticket whatever its lifetime
    // hint, so only the gateway decides whether it still resumes.
    let file = pki.dir.join("session.pem");
    let file = file.to_str().unwrap();
    let rotations = |gw: &Gateway| gw.log().matches("session ticket key rotated").count();
    let before = rotations(&gw);
    session(&pki, listen, "-tls1_2", file);
    let issued = Instant::now();
    // Resume until a rotation has happened since the ticket was issued:
    // every attempt, the ones after the rotation included, resumes.
    let deadline = issued + Duration::from_secs(INTERVAL + 2);
    let mut attempts = 0;
    loop {
        let output = resume(&pki, listen, "-tls1_2", file);
        attempts += 1;
        assert!(
            output.contains("Reused, TLSv1.2"),
            "attempt {attempts}: {output}"
        );
        if rotations(&gw) > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rotation logged:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after_rotation = resume(&pki, listen, "-tls1_2", file);
    assert!(
        after_rotation.contains("Reused, TLSv1.2"),
        "{after_rotation}"
    );
    // The ticket's key stops decrypting one overlap after the rotation,
    // at most two intervals after the ticket was issued.
    let retired = issued + Duration::from_secs(2 * INTERVAL) + Duration::from_millis(500);
    std::thread::sleep(retired.saturating_duration_since(Instant::now()));
    let expired = resume(&pki, listen, "-tls1_2", file);
    assert!(expired.contains("New, TLSv1.2"), "{expired}");
}
