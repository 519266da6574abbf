// A misspelt option is rejected, not ignored.
#[celeriac::task(name = "img.add", ack_late = true)]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

fn main() {}
