"""The controlled scene-bias benchmark (issue: does it work?): data generator, protocol, report."""
