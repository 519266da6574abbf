// With `bind = true` the task context comes first.
#[celeriac::task(name = "img.poll", bind = true)]
fn poll(job: String) -> String {
    job
}

fn main() {}
