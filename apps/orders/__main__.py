from orders.bootstrap import main

main()
