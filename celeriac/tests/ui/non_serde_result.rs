// A task's result is stored as JSON.
struct Report;

#[celeriac::task(name = "img.report")]
fn report() -> Report {
    Report
}

fn main() {}
