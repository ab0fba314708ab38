from services.bus.running import run_main
from services.lifecycle.service import Settings, run

run_main(run(Settings.from_env()))
