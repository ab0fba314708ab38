from services.api.service import Settings, run
from services.bus.running import run_main

run_main(run(Settings.from_env()))
