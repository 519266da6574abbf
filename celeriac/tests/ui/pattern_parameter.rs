// A parameter's name is its keyword: a pattern has none.
#[celeriac::task(name = "img.span")]
fn span((start, end): (i64, i64)) -> i64 {
    end - start
}

fn main() {}
