//! WAGI test guest: a CGI program run by the host with the request in env
//! vars and stdin, answering on stdout. The last segment of PATH_INFO picks
//! the behaviour (empty or unknown: `echo`).

use std::hint::black_box;
use std::io::{self, Read, Write};

fn query_pair(name: &str) -> Option<String> {
    let query = std::env::var("QUERY_STRING").unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

fn echo(out: &mut impl Write) -> io::Result<()> {
    let mut stdin = Vec::new();
    io::stdin().read_to_end(&mut stdin)?;

    out.write_all(b"Content-Type: text/plain\nX-Wagi-Probe: 1\n")?;
    if let Some(status) = query_pair("status") {
        writeln!(out, "Status: {status}")?;
    }
    out.write_all(b"\n")?;

    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (name, value) in vars {
        writeln!(out, "{name}={value}")?;
    }
    let argv0 = std::env::args().next().unwrap_or_default();
    writeln!(out, "argv0={argv0}")?;
    out.write_all(b"stdin=")?;
    out.write_all(&stdin)
}

fn main() -> io::Result<()> {
    let path_info = std::env::var("PATH_INFO").unwrap_or_default();
    let action = path_info.rsplit('/').next().unwrap_or("");
    let mut out = io::stdout().lock();

    match action {
        "redirect" => out.write_all(b"Location: /elsewhere\n\n")?,
        "malformed" => out.write_all(b"this is not a header line\n\nbody\n")?,
        "empty" => {}
        "trap" => std::process::abort(),
        "exit1" => {
            eprintln!("failing on purpose");
            std::process::exit(1);
        }
        "loop" => {
            let mut counter: u64 = 0;
            loop {
                counter = black_box(counter.wrapping_add(1));
            }
        }
        "flood" => {
            // `bytes` of log output in 100-byte lines, then an answer.
            let n: usize = query_pair("bytes")
                .and_then(|n| n.parse().ok())
                .unwrap_or(8 << 20);
            let line = [b'x'; 99];
            let mut err = io::stderr().lock();
            for _ in 0..n / 100 {
                err.write_all(&line)?;
                err.write_all(b"\n")?;
            }
            out.write_all(b"Content-Type: text/plain\n\nflooded")?;
        }
        "stderr" => {
            eprintln!("line one");
            eprintln!("line two");
            out.write_all(b"Content-Type: text/plain\n\nok")?;
        }
        "big" => {
            let n: usize = query_pair("bytes")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1 << 20);
            out.write_all(b"Content-Type: text/plain\n\n")?;
            let chunk = [b'x'; 8192];
            let mut left = n;
            while left > 0 {
                let len = left.min(chunk.len());
                out.write_all(&chunk[..len])?;
                left -= len;
            }
        }
        "oom" => {
            let mut kept: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = vec![0u8; 1 << 20];
                for i in (0..chunk.len()).step_by(4096) {
                    chunk[i] = 1;
                }
                kept.push(black_box(chunk));
            }
        }
        _ => echo(&mut out)?,
    }
    out.flush()
}
