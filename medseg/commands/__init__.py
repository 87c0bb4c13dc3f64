"""The verbs: each module is one `medseg` command, called by `medseg.cli` after parsing.

Commands compose the layers below (training, planning, doctor, report, inference, the run
folder) and own what is printed (`console`); nothing below imports from here.
"""
