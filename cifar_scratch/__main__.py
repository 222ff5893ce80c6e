from cifar_scratch.entry import main

main()
