//! A plain HTTP/1.0 GET to a guest's forwarded port on 127.0.0.1, in-process
//! (no curl): enough for an appliance's health and landing pages.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// What the guest answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// `GET path` on 127.0.0.1:`port`, each phase limited to `timeout`; the
/// body is read to the end (HTTP/1.0: the server closes), at most 1 MiB.
pub fn get(port: u16, path: &str, timeout: Duration) -> Result<Answer> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kiln-smoke\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("sending GET {path} to {addr}"))?;
    let mut raw = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to GET {path} from {addr}"))?;
    parse(&raw).with_context(|| format!("the answer to GET {path} from {addr}"))
}

fn parse(raw: &[u8]) -> Result<Answer> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
    else {
        if text.is_empty() {
            bail!("the connection closed without an answer");
        }
        bail!(
            "no end of headers in {:?}",
            text.chars().take(200).collect::<String>()
        );
    };
    let status_line = head.lines().next().unwrap_or("");
    let mut words = status_line.split_whitespace();
    let (Some(proto), Some(code)) = (words.next(), words.next()) else {
        bail!("not an HTTP status line: {status_line:?}");
    };
    if !proto.starts_with("HTTP/") {
        bail!("not an HTTP status line: {status_line:?}");
    }
    let status = code
        .parse()
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    Ok(Answer {
        status,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn gets_status_and_body_from_a_local_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            // The whole request (it may come in more than one segment)
            // before the answer: closing earlier resets the client's write.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early: {req:?}");
                req.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8_lossy(&req).into_owned();
            c.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n")
                .unwrap();
            req
        });
        let a = get(port, "/healthz", Duration::from_secs(5)).unwrap();
        assert_eq!(
            a,
            Answer {
                status: 200,
                body: "ok\n".into()
            }
        );
        assert!(server
            .join()
            .unwrap()
            .starts_with("GET /healthz HTTP/1.0\r\n"));
    }

    #[test]
    fn a_refused_or_garbled_answer_is_an_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = format!("{:#}", get(port, "/", Duration::from_secs(2)).unwrap_err());
        assert!(e.contains("connecting to 127.0.0.1"), "{e}");
        assert!(parse(b"").is_err());
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert_eq!(
            parse(b"HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap().status,
            404
        );
    }
}
