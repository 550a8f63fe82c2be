# workerd configuration for bench/run: one worker on 127.0.0.1:@PORT@ running
# @SCRIPT@, with the webhook key as a secret text binding (bench/run fills
# in the placeholders).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .worker) ],
  sockets = [ (name = "http", address = "127.0.0.1:@PORT@", http = (), service = "main") ],
);

const worker :Workerd.Worker = (
  modules = [ (name = "worker", esModule = embed "@SCRIPT@") ],
  compatibilityDate = "2025-01-01",
  bindings = [ (name = "GITHUB_WEBHOOK", text = "@KEY@") ],
);
