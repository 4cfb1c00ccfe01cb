//! What the benchmarks write: JSON-lines that look like application logs, so codecs see
//! realistic data (zstd compresses it about 5x).

use bytes::Bytes;

/// JSON-lines that look like application logs (zstd compresses them about 5x).
pub fn log_lines(len: usize) -> Bytes {
    let levels = ["INFO", "WARN", "DEBUG", "ERROR"];
    let paths = [
        "/api/v1/clicks",
        "/api/v1/views",
        "/health",
        "/api/v2/orders/checkout",
    ];
    let mut out = Vec::with_capacity(len + 256);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut n: u64 = 0;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        n += 1;
        out.extend_from_slice(
            format!(
                "{{\"ts\":\"2026-11-28T05:{:02}:{:02}.{:06}Z\",\"level\":\"{}\",\"path\":\"{}\",\"status\":{},\"latency_us\":{},\"user\":\"u{:05}\",\"req\":\"{:016x}\",\"seq\":{n}}}\n",
                (x >> 8) % 60,
                (x >> 16) % 60,
                x % 1_000_000,
                levels[(x >> 24) as usize % 4],
                paths[(x >> 28) as usize % 4],
                [200, 200, 200, 404, 500][(x >> 32) as usize % 5],
                (x >> 36) % 20_000,
                (x >> 40) % 50_000,
                x,
            )
            .as_bytes(),
        );
    }
    out.truncate(len);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_length_of_log_lines() {
        for len in [0, 1, 100, 16 << 10] {
            assert_eq!(log_lines(len).len(), len);
        }
        assert!(log_lines(1000).starts_with(b"{\"ts\":"));
    }
}
