from cifar_scratch.cli import main

main()
