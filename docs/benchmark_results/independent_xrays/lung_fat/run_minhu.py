"""sopi's CLI with hu_to_attenuation's min_hu changed (argv[1]); the rest of argv goes to sopi."""
import sys
min_hu = float(sys.argv.pop(1))
import sopi.preprocess as pre
pre.hu_to_attenuation.__defaults__ = (pre.hu_to_attenuation.__defaults__[0], min_hu)
from sopi.cli import main
sys.exit(main(sys.argv[1:]))
