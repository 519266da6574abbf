// A remote task runs elsewhere: it has no body here.
#[celeriac::task(name = "jwql.shared_tasks.shared_tasks.run", remote)]
fn run(input_file: String) -> Vec<String> {
    vec![input_file]
}

fn main() {}
