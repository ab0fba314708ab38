from services.bus.running import run_main
from services.registry.service import Settings, run

run_main(run(Settings.from_env()))
