"""sopi register with the polarity judgement's other-reading masks found at PX pixels (256: before, 128: after)."""
import sys
sys.path.insert(0, '/work/main/SOPIRegistration')
import sopi  # noqa: F401  (OpenMP waits as in sopi register)
import sopi.registration.preparation as pp

pp._OTHER_READINGS_PX = int(sys.argv[1])
from sopi.cli import main
sys.exit(main(sys.argv[2:]))
