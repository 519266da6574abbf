// Options take the kind of value Celery's do.
#[celeriac::task(acks_late = "yes")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

fn main() {}
