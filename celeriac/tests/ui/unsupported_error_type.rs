// An error must become a Python exception.
#[derive(Debug)]
struct Oops;

#[celeriac::task(name = "img.try")]
fn attempt() -> Result<i64, Oops> {
    Err(Oops)
}

fn main() {}
