//! curl: the one network client kiln uses (base ISO downloads, resumable).

use camino::Utf8Path;

use super::Cmd;

/// Response headers of `url` (after redirects) on stdout.
pub fn head(url: &str) -> Cmd {
    Cmd::new("curl", "ask the server for the file's size").args([
        "--fail",
        "--silent",
        "--show-error",
        "--location",
        "--head",
        "--max-time",
        "60",
        url,
    ])
}

/// Download `url` into `out`; with `resume`, continue after the bytes `out`
/// already has (HTTP Range). Exit 33: the server cannot resume.
pub fn get(url: &str, out: &Utf8Path, resume: bool) -> Cmd {
    let mut c = Cmd::new("curl", "download the file")
        .args([
            "--fail",
            "--silent",
            "--show-error",
            "--location",
            "--retry",
            "3",
        ])
        .args([
            "--connect-timeout",
            "30",
            "--speed-limit",
            "1024",
            "--speed-time",
            "60",
        ]);
    if resume {
        c = c.args(["--continue-at", "-"]);
    }
    c.args(["--output", out.as_str(), url])
}

/// The last `Content-Length` in a (possibly redirected) header dump.
pub fn content_length(headers: &str) -> Option<u64> {
    headers.lines().rev().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_length_after_redirects() {
        let h = "HTTP/1.1 302 Found\r\nContent-Length: 5\r\nLocation: /x\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n";
        assert_eq!(super::content_length(h), Some(1234));
        assert_eq!(super::content_length("HTTP/1.1 200 OK\r\n\r\n"), None);
    }
}
