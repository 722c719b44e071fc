"""solo-learn style script: same as the `occon-pretrain` console command."""
from occon_plugin.cli.pretrain import main

if __name__ == "__main__":
    main()
