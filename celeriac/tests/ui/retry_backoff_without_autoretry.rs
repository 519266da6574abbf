// As in Celery, retry_backoff only shapes the retries autoretry_for makes.
#[celeriac::task(name = "img.fetch", retry_backoff = true)]
fn fetch(url: String) -> String {
    url
}

fn main() {}
